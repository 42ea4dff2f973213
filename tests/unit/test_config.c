/*  Option tables, the config loader, endpoints. */
#include "ef_test.h"

#include "embedflow/backoff.h"
#include "pipeline/pipeline.h"
#include "runtime/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    int64_t n;
    int64_t size;
    int64_t ms;
    bool flag;
    char *name;
} s_opts_t;

static const ef_option_t s_table[] = {
    {"n", EF_OPT_INT, "5", offsetof (s_opts_t, n), 1, 10, "a number"},
    {"size", EF_OPT_SIZE, "4M", offsetof (s_opts_t, size), 0, 0, "bytes"},
    {"ms", EF_OPT_MS, "1s", offsetof (s_opts_t, ms), 0, 0, "time"},
    {"flag", EF_OPT_BOOL, "yes", offsetof (s_opts_t, flag), 0, 0, "switch"},
    {"some_name", EF_OPT_STRING, "x", offsetof (s_opts_t, name), 0, 0, "text"},
    EF_OPTION_END};

EF_TEST (options_parse)
{
    s_opts_t o = {0};
    char err[256];
    EF_REQUIRE (ef_options_defaults (s_table, &o, err, sizeof err) == 0);
    EF_CHECK (o.n == 5 && o.size == 4 << 20 && o.ms == 1000 && o.flag);
    EF_CHECK (strcmp (o.name, "x") == 0);
    EF_CHECK (ef_options_set (s_table, &o, "size", "512k", err, sizeof err) == 0
              && o.size == 512 * 1024);
    EF_CHECK (ef_options_set (s_table, &o, "ms", "250ms", err, sizeof err) == 0
              && o.ms == 250);
    EF_CHECK (ef_options_set (s_table, &o, "some-name", "y", err, sizeof err)
              == 0);
    EF_CHECK (strcmp (o.name, "y") == 0);
    EF_CHECK (ef_options_set (s_table, &o, "n", "11", err, sizeof err) == -1);
    EF_CHECK (strstr (err, "range") != NULL);
    EF_CHECK (ef_options_set (s_table, &o, "n", "abc", err, sizeof err) == -1);
    EF_CHECK (strstr (err, "integer") != NULL);
    EF_CHECK (ef_options_set (s_table, &o, "flag", "maybe", err, sizeof err)
              == -1);
    EF_CHECK (ef_options_set (s_table, &o, "nope", "1", err, sizeof err) == -1);
    EF_CHECK (strstr (err, "unknown key") && strstr (err, "some_name"));
    ef_options_free (s_table, &o);
    EF_CHECK (o.name == NULL);
}

static ef_config_t *
s_config (ef_registry_t **reg)
{
    char err[512];
    *reg = ef_registry_new ();
    ef_register_builtin_actors (*reg);
    return ef_config_new (*reg, ef_globals_options, sizeof (ef_globals_t), err,
                          sizeof err);
}

EF_TEST (config_keys_and_errors)
{
    ef_registry_t *reg;
    ef_config_t *c = s_config (&reg);
    EF_REQUIRE (c);
    char err[512];
    ef_globals_t *g = ef_config_globals (c);
    EF_CHECK (g->dim == 768 && strcmp (g->schema, "embedflow") == 0);
    EF_CHECK (ef_config_set (c, "dim", "128", err, sizeof err) == 0
              && g->dim == 128);
    EF_CHECK (
        ef_config_set (c, "actors.db-writer.instances", "3", err, sizeof err)
        == 0);
    EF_CHECK (ef_config_instances (c, "db-writer") == 3);
    EF_CHECK (
        ef_config_set (c, "actors.splitter.bach_rows", "3", err, sizeof err)
        == -1);
    EF_CHECK (strstr (err, "actors.splitter.bach_rows")
              && strstr (err, "batch_rows"));
    EF_CHECK (ef_config_set (c, "actors.nosuch.x", "3", err, sizeof err) == -1);
    EF_CHECK (strstr (err, "nosuch") != NULL);
    EF_CHECK (
        ef_config_set (c, "links.batches.endpoint", "http://x", err, sizeof err)
        == -1);
    EF_CHECK (ef_config_set (c, "links.batches.endpoint", "tcp://10.1.2.3:7100",
                             err, sizeof err)
              == 0);
    char ep[256];
    EF_CHECK (ef_config_link_endpoint (c, "batches", false, 2, ep, sizeof ep)
              == 0);
    EF_CHECK (strcmp (ep, "tcp://10.1.2.3:7102") == 0);
    EF_CHECK (
        ef_config_set (c, "links.batches.bind", "tcp://*:{i}7", err, sizeof err)
        == 0);
    EF_CHECK (ef_config_link_endpoint (c, "batches", true, 3, ep, sizeof ep)
              == 0);
    EF_CHECK (strcmp (ep, "tcp://*:37") == 0);
    EF_CHECK (ef_config_link_endpoint (c, "acks", true, -1, ep, sizeof ep)
              == 0);
    EF_CHECK (strcmp (ep, "inproc://acks") == 0);
    /* run: a split process with an inproc link to a remote actor is refused */
    EF_CHECK (
        ef_config_set (c, "run", "grpc-receiver,splitter", err, sizeof err)
        == 0);
    EF_CHECK (ef_config_runs_here (c, "splitter")
              && !ef_config_runs_here (c, "dlq"));
    EF_CHECK (ef_config_validate (c, err, sizeof err) == -1);
    EF_CHECK (strstr (err, "tcp://") != NULL);
    EF_CHECK (ef_config_set (c, "run", "dbwriter", err, sizeof err) == -1);
    ef_config_destroy (&c);
    EF_CHECK (c == NULL);
    ef_registry_destroy (&reg);
}

EF_TEST (config_yaml)
{
    char path[] = "/tmp/ef-config-XXXXXX";
    int fd = mkstemp (path);
    EF_REQUIRE (fd >= 0);
    const char *yaml = "dim: 384\n"
                       "schema: custom\n"
                       "actors:\n"
                       "  db-writer:\n"
                       "    instances: 4\n"
                       "  splitter:\n"
                       "    batch_rows: 250\n"
                       "    linger: 5ms\n"
                       "links:\n"
                       "  chunks:\n"
                       "    hwm: 16\n";
    EF_REQUIRE (write (fd, yaml, strlen (yaml)) == (ssize_t) strlen (yaml));
    close (fd);
    ef_registry_t *reg;
    ef_config_t *c = s_config (&reg);
    char err[512];
    EF_CHECK (ef_config_load_file (c, path, err, sizeof err) == 0);
    ef_globals_t *g = ef_config_globals (c);
    EF_CHECK (g->dim == 384 && strcmp (g->schema, "custom") == 0);
    EF_CHECK (ef_config_instances (c, "db-writer") == 4);
    EF_CHECK (ef_config_link_hwm (c, "chunks", 8) == 16);
    EF_CHECK (ef_config_link_hwm (c, "dead", 8) == 8);
    EF_CHECK (ef_config_validate (c, err, sizeof err) == 0);

    /* A misspelt key names the file, the line, the key and the choices. */
    const char *bad = "dim: 8\nactors:\n  splitter:\n    batch_rowz: 5\n";
    FILE *f = fopen (path, "w");
    fputs (bad, f);
    fclose (f);
    EF_CHECK (ef_config_load_file (c, path, err, sizeof err) == -1);
    EF_CHECK (strstr (err, ":4:") && strstr (err, "batch_rowz")
              && strstr (err, "unknown key"));
    f = fopen (path, "w");
    fputs ("dim: [1, 2\n", f);
    fclose (f);
    EF_CHECK (ef_config_load_file (c, path, err, sizeof err) == -1);
    EF_CHECK (strstr (err, "YAML") != NULL);
    EF_CHECK (ef_config_load_file (c, "/nonexistent/x.yaml", err, sizeof err)
              == -1);
    unlink (path);
    ef_config_destroy (&c);
    ef_registry_destroy (&reg);
}

/* Writes n bytes to a fresh temporary file; its path goes to path. */
static void
s_write_file (char *path, const char *bytes, size_t n)
{
    strcpy (path, "/tmp/ef-config-XXXXXX");
    int fd = mkstemp (path);
    if (fd >= 0) {
        if (write (fd, bytes, n) != (ssize_t) n)
            path[0] = '\0';
        close (fd);
    }
}

/* Found by fuzz_config: libfyaml spun forever on a directive line that
   is not UTF-8, so `run --config` hung instead of exiting 2. */
EF_TEST (config_file_not_utf8)
{
    ef_registry_t *reg;
    ef_config_t *c = s_config (&reg);
    EF_REQUIRE (c);
    char path[64], err[512] = "";
    const char bad[] = "dim: 8\n%\xec\n";
    s_write_file (path, bad, sizeof bad - 1);
    EF_CHECK (ef_config_load_file (c, path, err, sizeof err) == -1);
    EF_CHECK (strstr (err, ":2: not UTF-8 text") != NULL);
    unlink (path);
    const char nul[] = "dim: 8\nschema: a\0b\n";
    s_write_file (path, nul, sizeof nul - 1);
    EF_CHECK (ef_config_load_file (c, path, err, sizeof err) == -1);
    EF_CHECK (strstr (err, ":2: not UTF-8 text") != NULL);
    unlink (path);

    /* UTF-8 is fine, also a character cut by the reader's buffer. */
    static char good[8192];
    size_t n = (size_t) snprintf (good, sizeof good, "schema: caf\xc3\xa9\n#");
    while (n < 4095)
        good[n++] = 'x';
    n += (size_t) snprintf (good + n, sizeof good - n, "\xc3\xa9\ndim: 16\n");
    s_write_file (path, good, n);
    EF_CHECK (ef_config_load_file (c, path, err, sizeof err) == 0);
    ef_globals_t *g = ef_config_globals (c);
    EF_CHECK (strcmp (g->schema, "caf\xc3\xa9") == 0 && g->dim == 16);
    unlink (path);
    ef_config_destroy (&c);
    ef_registry_destroy (&reg);
}

/* A section check: n must be odd. */
static int
s_entry_check (const char *name, const void *entry, char *why, size_t len)
{
    (void) name;
    if (((const s_opts_t *) entry)->n % 2 == 1)
        return 0;
    snprintf (why, len, "n: must be odd");
    return -1;
}

EF_TEST (config_sections)
{
    char path[] = "/tmp/ef-config-XXXXXX";
    int fd = mkstemp (path);
    EF_REQUIRE (fd >= 0);
    const char *yaml = "jobs:\n"
                       "  nightly:\n"
                       "    n: 7\n"
                       "    some_name: docs\n"
                       "  hourly:\n"
                       "    flag: no\n";
    EF_REQUIRE (write (fd, yaml, strlen (yaml)) == (ssize_t) strlen (yaml));
    close (fd);
    ef_registry_t *reg;
    ef_config_t *c = s_config (&reg);
    char err[512];
    /* before the section is declared, its keys are unknown globals */
    EF_CHECK (ef_config_set (c, "jobs.x.n", "1", err, sizeof err) == -1);
    EF_REQUIRE (ef_config_add_section (c, "jobs", s_table, sizeof (s_opts_t),
                                       s_entry_check, err, sizeof err)
                == 0);
    EF_CHECK (ef_config_add_section (c, "jobs", s_table, sizeof (s_opts_t),
                                     NULL, err, sizeof err)
              == -1);
    EF_CHECK (ef_config_section_size (c, "jobs") == 0);
    EF_CHECK (ef_config_load_file (c, path, err, sizeof err) == 0);
    /* entries in the order first named, defaults under what was set */
    EF_REQUIRE (ef_config_section_size (c, "jobs") == 2);
    const char *name = NULL;
    const s_opts_t *o = ef_config_section_entry (c, "jobs", 0, &name);
    EF_REQUIRE (o && strcmp (name, "nightly") == 0);
    EF_CHECK (o->n == 7 && strcmp (o->name, "docs") == 0 && o->flag);
    o = ef_config_section_entry (c, "jobs", 1, &name);
    EF_REQUIRE (o && strcmp (name, "hourly") == 0);
    EF_CHECK (o->n == 5 && !o->flag && strcmp (o->name, "x") == 0);
    EF_CHECK (ef_config_section_entry (c, "jobs", 2, &name) == NULL);
    /* a flag over the file: same entry; a new name: a new entry */
    EF_CHECK (ef_config_set (c, "jobs.hourly.n", "9", err, sizeof err) == 0);
    EF_CHECK (((s_opts_t *) ef_config_section_find (c, "jobs", "hourly"))->n
              == 9);
    EF_CHECK (ef_config_set (c, "jobs.adhoc.ms", "2s", err, sizeof err) == 0);
    EF_CHECK (ef_config_section_size (c, "jobs") == 3);
    EF_CHECK (ef_config_section_find (c, "jobs", "nope") == NULL);
    EF_CHECK (ef_config_section_size (c, "nosuch") == 0);
    /* errors name the path and the reason */
    EF_CHECK (ef_config_set (c, "jobs.hourly.nn", "1", err, sizeof err) == -1);
    EF_CHECK (strstr (err, "jobs.hourly.nn") && strstr (err, "unknown key"));
    EF_CHECK (ef_config_set (c, "jobs.hourly.n", "99", err, sizeof err) == -1);
    EF_CHECK (strstr (err, "range") != NULL);
    EF_CHECK (ef_config_set (c, "jobs.hourly", "1", err, sizeof err) == -1);
    EF_CHECK (strstr (err, "expected jobs.NAME.KEY") != NULL);
    EF_CHECK (ef_config_set (c, "jobs.a b.n", "1", err, sizeof err) == -1);
    EF_CHECK (strstr (err, "letters, digits") != NULL);
    /* the check runs in validate: hourly has n = 9, adhoc 5, nightly 7 */
    EF_CHECK (ef_config_validate (c, err, sizeof err) == 0);
    EF_CHECK (ef_config_set (c, "jobs.adhoc.n", "4", err, sizeof err) == 0);
    EF_CHECK (ef_config_validate (c, err, sizeof err) == -1);
    EF_CHECK (strcmp (err, "jobs.adhoc.n: must be odd") == 0);
    EF_CHECK (ef_config_set (c, "jobs.adhoc.n", "3", err, sizeof err) == 0);
    /* a bad key or value creates no entry */
    EF_CHECK (ef_config_set (c, "jobs.fresh.n", "99", err, sizeof err) == -1);
    EF_CHECK (ef_config_set (c, "jobs.fresh.x", "1", err, sizeof err) == -1);
    EF_CHECK (ef_config_section_size (c, "jobs") == 3);
    unlink (path);
    ef_config_destroy (&c);
    ef_registry_destroy (&reg);
}

EF_TEST (backoff_policy)
{
    ef_backoff_t b = ef_backoff_make (100, 1000, 5);
    int64_t prev_ceiling = 100;
    for (int i = 0; i < 5; i++) {
        int64_t d = ef_backoff_next (&b);
        EF_CHECK (d >= 1 && d <= prev_ceiling);
        prev_ceiling = prev_ceiling * 2 > 1000 ? 1000 : prev_ceiling * 2;
    }
    EF_CHECK (ef_backoff_next (&b) == -1); /* budget spent */
    ef_backoff_reset (&b);
    EF_CHECK (ef_backoff_next (&b) > 0);
    ef_backoff_t inf = ef_backoff_make (1, 8, -1);
    for (int i = 0; i < 100; i++)
        EF_CHECK (ef_backoff_next (&inf) <= 8);
    atomic_int stop = 1;
    EF_CHECK (ef_backoff_sleep (10000, &stop) == -1);
}

EF_TEST (config_tcp_links_need_keys_off_loopback)
{
    ef_registry_t *reg;
    ef_config_t *c = s_config (&reg);
    EF_REQUIRE (c);
    char err[1024];
    /* the ingest side of a split: connects batches and dead, binds acks */
    EF_CHECK (ef_config_set (c, "run",
                             "grpc-receiver,scheduler,grpc-puller,splitter",
                             err, sizeof err)
              == 0);
    EF_CHECK (ef_config_set (c, "links.batches.endpoint", "tcp://10.0.0.2:7100",
                             err, sizeof err)
              == 0);
    EF_CHECK (ef_config_set (c, "links.dead.endpoint", "tcp://127.0.0.1:7090",
                             err, sizeof err)
              == 0);
    EF_CHECK (ef_config_set (c, "links.acks.endpoint", "tcp://127.0.0.1:7080",
                             err, sizeof err)
              == 0);
    EF_CHECK (ef_config_set (c, "links.pull-acks.endpoint",
                             "tcp://localhost:7081", err, sizeof err)
              == 0);
    EF_CHECK (ef_config_validate (c, err, sizeof err) == -1);
    EF_CHECK (strstr (err, "links.batches") && strstr (err, "server_key"));
    /* insecure lets it through */
    EF_CHECK (
        ef_config_set (c, "links.batches.insecure", "true", err, sizeof err)
        == 0);
    EF_CHECK (ef_config_validate (c, err, sizeof err) == 0);
    EF_CHECK (
        ef_config_set (c, "links.batches.insecure", "false", err, sizeof err)
        == 0);
    /* a server key needs a key pair of our own */
    EF_CHECK (ef_config_set (c, "links.batches.server_key",
                             "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7", err,
                             sizeof err)
              == 0);
    EF_CHECK (ef_config_validate (c, err, sizeof err) == -1);
    EF_CHECK (strstr (err, "curve.key") != NULL);
    EF_CHECK (ef_config_set (c, "curve.key", "/x/k.key_secret", err, sizeof err)
              == 0);
    /* acks binds on loopback: with a key pair it needs an allow-list */
    EF_CHECK (ef_config_validate (c, err, sizeof err) == -1);
    EF_CHECK (strstr (err, "curve.clients") != NULL);
    EF_CHECK (ef_config_set (c, "curve.clients", "/x/clients", err, sizeof err)
              == 0);
    EF_CHECK (ef_config_validate (c, err, sizeof err) == 0);
    /* with keys, binding every interface is fine */
    EF_CHECK (
        ef_config_set (c, "links.acks.bind", "tcp://*:7080", err, sizeof err)
        == 0);
    EF_CHECK (ef_config_validate (c, err, sizeof err) == 0);
    ef_config_destroy (&c);
    ef_registry_destroy (&reg);
    /* the writer side, no keys: binding every interface is refused */
    c = s_config (&reg);
    EF_REQUIRE (c);
    EF_CHECK (ef_config_set (c, "run", "db-writer,dlq,cache-invalidator", err,
                             sizeof err)
              == 0);
    EF_CHECK (
        ef_config_set (c, "links.batches.bind", "tcp://*:7100", err, sizeof err)
        == 0);
    EF_CHECK (ef_config_set (c, "links.batches.endpoint", "tcp://10.0.0.2:7100",
                             err, sizeof err)
              == 0);
    EF_CHECK (ef_config_set (c, "links.acks.endpoint", "tcp://[::1]:7080", err,
                             sizeof err)
              == 0);
    EF_CHECK (ef_config_set (c, "links.pull-acks.endpoint",
                             "tcp://127.0.0.2:7081", err, sizeof err)
              == 0);
    EF_CHECK (ef_config_validate (c, err, sizeof err) == -1);
    EF_CHECK (strstr (err, "links.batches") && strstr (err, "tcp://*:7100")
              && strstr (err, "insecure"));
    EF_CHECK (ef_config_set (c, "curve.nope", "x", err, sizeof err) == -1);
    EF_CHECK (strstr (err, "curve.nope") && strstr (err, "clients"));
    EF_CHECK (ef_config_set (c, "links.batches.secure", "x", err, sizeof err)
              == -1);
    EF_CHECK (strstr (err, "insecure") != NULL);
    ef_config_destroy (&c);
    ef_registry_destroy (&reg);
}

EF_TEST (config_link_max_message)
{
    ef_registry_t *reg;
    ef_config_t *c = s_config (&reg);
    EF_REQUIRE (c);
    char err[512];
    EF_CHECK (ef_config_link_max_message (c, "batches") == EF_LINK_MAX_DEFAULT);
    ef_pipeline_link_limits (c);
    int64_t batches = ef_config_link_max_message (c, "batches");
    EF_CHECK (batches > (16 << 20) && batches < (20 << 20));
    EF_CHECK (ef_config_link_max_message (c, "acks") == 1 << 20);
    EF_CHECK (
        ef_config_set (c, "actors.splitter.batch_bytes", "64M", err, sizeof err)
        == 0);
    ef_pipeline_link_limits (c);
    EF_CHECK (ef_config_link_max_message (c, "batches") > (64 << 20));
    EF_CHECK (
        ef_config_set (c, "links.batches.max_message", "2M", err, sizeof err)
        == 0);
    EF_CHECK (ef_config_link_max_message (c, "batches") == 2 << 20);
    EF_CHECK (ef_config_set (c, "links.acks.max_message", "12", err, sizeof err)
              == -1);
    ef_config_destroy (&c);
    ef_registry_destroy (&reg);
}

/* Loads text as a config file into a fresh config; returns it, NULL with
   err set when the load failed. */
static ef_config_t *
s_load_text (ef_registry_t **reg, const char *text, char *err, size_t errlen)
{
    char path[64];
    s_write_file (path, text, strlen (text));
    ef_config_t *c = s_config (reg);
    if (c && (!path[0] || ef_config_load_file (c, path, err, errlen) != 0))
        ef_config_destroy (&c);
    if (path[0])
        unlink (path);
    return c;
}

EF_TEST (config_env_interpolation)
{
    setenv ("EF_UT_DIM", "96", 1);
    setenv ("EF_UT_EMPTY", "", 1);
    unsetenv ("EF_UT_UNSET");
    ef_registry_t *reg = NULL;
    char err[512] = "";
    ef_config_t *c =
        s_load_text (&reg,
                     "dim: ${EF_UT_DIM}\n"
                     "schema: s_${EF_UT_UNSET:-d}_${EF_UT_EMPTY:-e}"
                     "_$${EF_UT_DIM}_$x_${EF_UT_EMPTY}\n"
                     "run: [splitter, '${EF_UT_UNSET:-db-writer}']\n",
                     err, sizeof err);
    EF_REQUIRE (c);
    ef_globals_t *g = ef_config_globals (c);
    EF_CHECK (g->dim == 96);
    /* unset and empty take the default; $${ is a literal ${; a lone $
       stays; an empty variable without a default is empty */
    EF_CHECK (strcmp (g->schema, "s_d_e_${EF_UT_DIM}_$x_") == 0);
    EF_CHECK (ef_config_runs_here (c, "db-writer")
              && !ef_config_runs_here (c, "grpc-receiver"));
    ef_config_destroy (&c);
    ef_registry_destroy (&reg);

    static const struct {
        const char *text; /* the file */
        const char *want; /* in the error */
    } bad[] = {
        {"dim: 8\nschema: ${EF_UT_UNSET}\n", ":2: schema: ${EF_UT_UNSET} is "
                                             "not set"},
        {"schema: ${EF_UT_DIM\n", "without a closing"},
        {"schema: ${}\n", "is not ${NAME}"},
        {"schema: ${9A}\n", "is not ${NAME}"},
        {"schema: ${EF_UT_DIM-x}\n", "is not ${NAME}"},
        {"run: [splitter, '${EF_UT_UNSET}']\n", "run: ${EF_UT_UNSET}"},
        {"dim: ${EF_UT_EMPTY:-x}\n", "'x' is not an integer"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        c = s_load_text (&reg, bad[i].text, err, sizeof err);
        EF_CHECK (c == NULL);
        if (!strstr (err, bad[i].want))
            fprintf (stderr, "case %zu: %s\n", i, err);
        EF_CHECK (strstr (err, bad[i].want) != NULL);
        ef_config_destroy (&c);
        ef_registry_destroy (&reg);
    }
    unsetenv ("EF_UT_DIM");
    unsetenv ("EF_UT_EMPTY");
}

/* The printed configuration is YAML the loader reads back to the same
   configuration, secrets masked. */
EF_TEST (config_print_round_trip)
{
    ef_registry_t *reg = NULL;
    char err[512] = "";
    ef_config_t *c = s_load_text (
        &reg,
        "database: 'host=h password=pw1 dbname=d'\n"
        "dim: 12\n"
        "drain_idle: 1500ms\n"
        "actors:\n"
        "  splitter: { batch_bytes: 3000, linger: 60s }\n"
        "  grpc-receiver: { auth_token: tok1, default_source: "
        "\"q\\\"\\\\\\t$${x}\" }\n"
        "links:\n"
        "  batches: { endpoint: 'tcp://127.0.0.1:7000', hwm: 9 }\n",
        err, sizeof err);
    EF_REQUIRE (c);
    char *first = NULL, *second = NULL;
    size_t n1 = 0, n2 = 0;
    FILE *out = open_memstream (&first, &n1);
    ef_config_print (c, out, ef_globals_show_secret);
    fclose (out);
    ef_config_destroy (&c);
    ef_registry_destroy (&reg);
    EF_CHECK (strstr (first, "database: \"host=h password=*** dbname=d\"\n"));
    EF_CHECK (!strstr (first, "pw1") && !strstr (first, "tok1"));
    EF_CHECK (strstr (first, "    auth_token: \"***\"\n"));
    EF_CHECK (strstr (first, "    batch_bytes: 3000\n"));
    EF_CHECK (strstr (first, "    linger: 1m\n"));
    EF_CHECK (strstr (first, "drain_idle: 1500ms\n"));
    EF_CHECK (strstr (first, "default_source: \"q\\\"\\\\\\x09$${x}\"\n"));
    EF_CHECK (strstr (first, "# tls_cert: (not set)\n"));

    c = s_load_text (&reg, first, err, sizeof err);
    if (!c)
        fprintf (stderr, "%s\n", err);
    EF_REQUIRE (c);
    out = open_memstream (&second, &n2);
    ef_config_print (c, out, ef_globals_show_secret);
    fclose (out);
    EF_CHECK (strcmp (first, second) == 0);
    EF_CHECK (ef_config_link_hwm (c, "batches", 4) == 9);
    ef_config_destroy (&c);
    ef_registry_destroy (&reg);
    free (first);
    free (second);
}

/* Sets each "key=value" of pairs (NULL-terminated); 0 when all took. */
static int
s_set_all (ef_config_t *c, const char *const *pairs, char *err, size_t len)
{
    for (; *pairs; pairs++) {
        char key[128];
        const char *eq = strchr (*pairs, '=');
        snprintf (key, sizeof key, "%.*s", (int) (eq - *pairs), *pairs);
        if (ef_config_set (c, key, eq + 1, err, len) != 0)
            return -1;
    }
    return 0;
}

/* A placement of four writers on two hosts plus an ingest host, with
   the writer-b host as this process, and one more setting; returns what
   ef_config_validate returns. */
static int
s_placed (ef_config_t *c, const char *key, const char *value, char *err,
          size_t len)
{
    static const char *const base[] = {
        "actors.db-writer.instances=4",
        "hosts.ingest.address=10.0.0.1",
        "hosts.ingest.key=rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7",
        "hosts.ingest.run=grpc-receiver,scheduler,grpc-puller,splitter",
        "hosts.writer-a.address=10.0.0.2",
        "hosts.writer-a.key=Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID",
        "hosts.writer-a.run=db-writer:0-1,dlq,cache-invalidator",
        "hosts.writer-b.address=10.0.0.3",
        "hosts.writer-b.key=rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf8",
        "hosts.writer-b.run=db-writer:2-3",
        "host=writer-b",
        "curve.key=/x/b.key_secret",
        "curve.clients=/x/clients",
        "links.batches.endpoint=tcp://{host}:7100",
        "links.batches.bind=tcp://*:7100",
        "links.dead.endpoint=tcp://{host}:7090",
        "links.committed.endpoint=tcp://{host}:7091",
        "links.acks.endpoint=tcp://{host}:7080",
        "links.pull-acks.endpoint=tcp://{host}:7081",
        NULL};
    if (s_set_all (c, base, err, len) != 0)
        return -1;
    if (key && ef_config_set (c, key, value, err, len) != 0)
        return -1;
    return ef_config_validate (c, err, len);
}

EF_TEST (config_placement)
{
    ef_registry_t *reg;
    ef_config_t *c = s_config (&reg);
    EF_REQUIRE (c);
    char err[1024] = "";
    EF_REQUIRE (s_placed (c, NULL, NULL, err, sizeof err) == 0);
    /* this process is writer-b: writers 2 and 3 only */
    EF_CHECK (ef_config_runs_here (c, "db-writer"));
    EF_CHECK (!ef_config_runs_here (c, "dlq"));
    EF_CHECK (!ef_config_instance_runs_here (c, "db-writer", 1));
    EF_CHECK (ef_config_instance_runs_here (c, "db-writer", 2));
    EF_CHECK (ef_config_instance_runs_here (c, "db-writer", 3));
    char ep[256];
    /* {host}: the host of the consuming instance, its index on the port */
    EF_CHECK (ef_config_link_endpoint (c, "batches", false, 1, ep, sizeof ep)
                  == 0
              && strcmp (ep, "tcp://10.0.0.2:7101") == 0);
    EF_CHECK (ef_config_link_endpoint (c, "batches", false, 3, ep, sizeof ep)
                  == 0
              && strcmp (ep, "tcp://10.0.0.3:7103") == 0);
    EF_CHECK (ef_config_link_endpoint (c, "batches", true, 2, ep, sizeof ep)
                  == 0
              && strcmp (ep, "tcp://*:7102") == 0);
    EF_CHECK (ef_config_link_endpoint (c, "dead", false, -1, ep, sizeof ep) == 0
              && strcmp (ep, "tcp://10.0.0.2:7090") == 0);
    EF_CHECK (ef_config_link_endpoint (c, "acks", false, -1, ep, sizeof ep) == 0
              && strcmp (ep, "tcp://10.0.0.1:7080") == 0);
    /* the graph: a cluster per host, this one marked */
    char *dot = NULL;
    size_t dlen = 0;
    FILE *f = open_memstream (&dot, &dlen);
    ef_config_print_dot (c, f);
    fclose (f);
    EF_CHECK (strstr (dot, "host writer-b (10.0.0.3): this process"));
    EF_CHECK (strstr (dot, "\"db-writer@writer-a\" [label=\"db-writer [0-1] "
                           "of 4\"]"));
    free (dot);
    ef_config_destroy (&c);
    ef_registry_destroy (&reg);

    /* every bad placement exits with the key and the reason */
    static const char *const bad[][3] = {
        {"hosts.writer-b.run", "db-writer:2-4", "actors.db-writer.instances"},
        {"hosts.writer-b.run", "db-writer:1-3", "runs on host writer-a"},
        {"hosts.writer-b.run", "db-writer:3", "no host runs db-writer[2]"},
        {"hosts.writer-b.run", "db-writer:3-2", "instance range"},
        {"hosts.writer-b.run", "db-writer:x", "instance range"},
        {"hosts.writer-b.run", "db-writer:2,db-writer:3", "named twice"},
        {"hosts.writer-b.run", "db-writer:2-3,nope", "not an actor"},
        {"hosts.writer-b.address", "", "hosts.writer-b.address"},
        {"host", "writer-c", "'writer-c' is not an entry"},
        {"links.committed.endpoint", "inproc://committed",
         "links.committed: only some instances of db-writer"},
        {"hosts.writer-b.key", "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7",
         NULL},
        {NULL, NULL, NULL}};
    for (size_t i = 0; bad[i][0]; i++) {
        c = s_config (&reg);
        EF_REQUIRE (c);
        err[0] = 0;
        int rc = s_placed (c, bad[i][0], bad[i][1], err, sizeof err);
        if (bad[i][2]) {
            EF_CHECK (rc == -1);
            EF_CHECK (strstr (err, bad[i][2]) != NULL);
            if (!strstr (err, bad[i][2]))
                fprintf (stderr, "  %s=%s: %s\n", bad[i][0], bad[i][1], err);
        }
        else
            EF_CHECK (rc == 0);
        ef_config_destroy (&c);
        ef_registry_destroy (&reg);
    }

    /* {host} without hosts:, and a range beyond the instances */
    c = s_config (&reg);
    EF_REQUIRE (c);
    EF_CHECK (ef_config_set (c, "links.batches.endpoint", "tcp://{host}:7100",
                             err, sizeof err)
              == 0);
    EF_CHECK (ef_config_validate (c, err, sizeof err) == -1);
    EF_CHECK (strstr (err, "{host} needs a hosts: section") != NULL);
    ef_config_destroy (&c);
    ef_registry_destroy (&reg);
    c = s_config (&reg);
    EF_REQUIRE (c);
    EF_CHECK (ef_config_set (c, "run", "db-writer:1-2,dlq,cache-invalidator",
                             err, sizeof err)
              == 0);
    EF_CHECK (ef_config_validate (c, err, sizeof err) == -1);
    EF_CHECK (strstr (err, "run: db-writer:1-2") != NULL);
    EF_CHECK (ef_config_set (c, "links.peer_timeout.x", "1", err, sizeof err)
              == -1);
    EF_CHECK (
        ef_config_set (c, "links.acks.peer_timeout", "soon", err, sizeof err)
        == -1);
    EF_CHECK (strstr (err, "links.acks.peer_timeout") != NULL);
    ef_config_destroy (&c);
    ef_registry_destroy (&reg);
}

EF_TEST (config_topology_from_to)
{
    ef_registry_t *reg;
    ef_config_t *c = s_config (&reg);
    EF_REQUIRE (c);
    char err[512];
    /* the default topology: today's pipeline, valid as it is */
    EF_CHECK (ef_config_validate (c, err, sizeof err) == 0);
    EF_CHECK (ef_config_link_count (c) == 8);
    const ef_port_def_t *in = NULL;
    const ef_actor_def_t *to = ef_config_link_consumer (c, "batches", &in);
    EF_CHECK (to && strcmp (to->name, "db-writer") == 0 && in->per_instance);
    EF_CHECK (strcmp (ef_config_link_type (c, "acks"), "embedflow.v1.Ack")
              == 0);
    /* drain order follows the graph: sources, then downstream */
    size_t order[16];
    EF_REQUIRE (ef_config_actor_count (c) <= 16);
    size_t n = ef_config_drain_order (c, order);
    const char *want[] = {"grpc-receiver",     "scheduler",   "grpc-puller",
                          "splitter",          "db-writer",   "dlq",
                          "cache-invalidator", "index-sealer"};
    EF_CHECK (n == 8);
    for (size_t i = 0; i < n && i < 8; i++)
        EF_CHECK (strcmp (ef_config_actor_at (c, order[i])->name, want[i])
                  == 0);
    /* an OUT port joins one link per source: acks and pull-acks */
    const char *links[4];
    EF_CHECK (ef_config_port_links (c, "db-writer", "acks", links, 4) == 2);
    EF_CHECK (strcmp (links[0], "acks") == 0
              && strcmp (links[1], "pull-acks") == 0);

    /* a port of another message type */
    EF_CHECK (ef_config_set (c, "links.batches.from", "splitter.dead", err,
                             sizeof err)
              == 0);
    EF_CHECK (ef_config_validate (c, err, sizeof err) == -1);
    EF_CHECK (strstr (err, "links.batches.from") && strstr (err, "RowBatch"));
    EF_CHECK (ef_config_set (c, "links.batches.from", "splitter.batches", err,
                             sizeof err)
              == 0);
    /* malformed refs are refused when set, naming the key */
    EF_CHECK (
        ef_config_set (c, "links.batches.to", "db-writer", err, sizeof err)
        == -1);
    EF_CHECK (strstr (err, "links.batches.to") && strstr (err, "ACTOR.PORT"));
    EF_CHECK (ef_config_set (c, "links.batches.to", "a.b, c.d", err, sizeof err)
              == -1);
    /* a new link needs both ends; an IN port reads one link */
    EF_CHECK (ef_config_set (c, "links.extra.hwm", "3", err, sizeof err) == 0);
    EF_CHECK (ef_config_validate (c, err, sizeof err) == -1);
    EF_CHECK (strstr (err, "links.extra.to") != NULL);
    EF_CHECK (ef_config_set (c, "links.extra.to", "dlq.dead", err, sizeof err)
              == 0);
    EF_CHECK (ef_config_validate (c, err, sizeof err) == -1);
    EF_CHECK (strstr (err, "links.extra.to") && strstr (err, "links.dead"));
    /* plugins are a key only where the program allows them */
    EF_CHECK (ef_config_set (c, "plugins", "libx.so", err, sizeof err) == -1);
    EF_CHECK (strstr (err, "plugins") != NULL);
    ef_config_destroy (&c);
    ef_registry_destroy (&reg);
}
