/*  config.c — one configuration: globals, actors, links; the YAML loader.

    Every setting, whether it comes from the file or a flag, goes through
    ef_config_set with a dotted path, so there is one place that knows the
    keys and one wording for every error.
*/
#include "internal.h"

#include "embedflow/address.h"
#include "embedflow/log.h"
#include "embedflow/utf8.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <libfyaml.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#define EF_MAX_LINKS    64
#define EF_MAX_PLUGINS  16
#define EF_MAX_SECTIONS 8
#define EF_MAX_ENTRIES  256
/* Most instances an actor may have (actors.NAME.instances). */
#define EF_MAX_INSTANCES 256

typedef struct {
    const ef_actor_def_t *def; /* borrowed from the registry */
    void *options;  /* def->options_size bytes, table-owned strings */
    int instances;  /* instances in the whole topology */
    bool runs_here; /* started by this process (some of its instances) */
    int first;      /* first instance run here (run: NAME:A-B) */
    int last;       /* last instance run here; -1 = through the last */
    int16_t host_of[EF_MAX_INSTANCES]; /* index in hosts: of the host
                                          running instance i; -1 none */
    int restart;            /* actors.NAME.restart: 1 always, 0 never, -1
                               the definition's default */
    int64_t max_restarts;   /* failures a restart_window may hold */
    int64_t restart_window; /* ms a failure is remembered */
} s_actor_cfg_t;

/* The supervision keys every actor has (besides restart, which takes
   always or never). */
static const ef_option_t s_restart_options[] = {
    {"max_restarts", EF_OPT_INT, "5", offsetof (s_actor_cfg_t, max_restarts), 0,
     EF_RESTARTS_MAX,
     "restarts allowed within restart_window; one more failure stops the "
     "process (exit 1)"},
    {"restart_window", EF_OPT_MS, "60s",
     offsetof (s_actor_cfg_t, restart_window), 1, 86400000,
     "how long a failure counts against max_restarts"},
    EF_OPTION_END};

/* One entry of `hosts:`: where a process runs and what (placement). */
typedef struct {
    char *address;    /* what {host} in an endpoint becomes */
    char *run;        /* the host's `run` list, ranges allowed */
    char *key;        /* the host's public key file (server key of what it
                      binds), or NULL */
    char key_txt[41]; /* key read by ef_config_load_keys, Z85 */
} s_host_t;

static const ef_option_t s_host_options[] = {
    {"address", EF_OPT_STRING, NULL, offsetof (s_host_t, address), 0, 0,
     "address other hosts reach this one at: {host} in link endpoints"},
    {"run", EF_OPT_STRING, NULL, offsetof (s_host_t, run), 0, 0,
     "actors (and instance ranges, db-writer:0-1) this host runs"},
    {"key", EF_OPT_STRING, NULL, offsetof (s_host_t, key), 0, 0,
     "public key file of this host: the server key of the links it binds"},
    EF_OPTION_END};

typedef struct {
    char *name;            /* links.NAME */
    char *from;            /* comma list of OUT ports, ACTOR.PORT; NULL none */
    char *to;              /* the IN port, ACTOR.PORT; NULL none */
    char *endpoint;        /* connect form; NULL = inproc default */
    char *bind;            /* bind form; NULL = endpoint */
    int hwm;               /* 0 = the ports' default */
    char *server_key;      /* CURVE key of the binding side: file or Z85 text */
    char server_txt[41];   /* server_key read by ef_config_load_keys, Z85 */
    bool insecure;         /* tcp without CURVE allowed off loopback */
    int64_t max_message;   /* ZMQ_MAXMSGSIZE set by the user; 0 = default */
    int64_t default_max;   /* the application's default; 0 = the runtime's */
    int64_t peer_timeout;  /* ms without a peer before /readyz fails; 0 off */
    bool peer_timeout_set; /* peer_timeout given (else the default) */
} s_link_cfg_t;

/* links.NAME.peer_timeout when not given. */
#define EF_PEER_TIMEOUT_DEFAULT_MS 30000

typedef struct {
    char *name;    /* the entry's key, [A-Za-z0-9_-]+ */
    void *options; /* section table's struct, table-owned strings */
} s_entry_t;

typedef struct {
    char *name;                        /* top-level key, e.g. "jobs" */
    const ef_option_t *table;          /* borrowed */
    size_t entry_size;                 /* bytes of one entry's struct */
    ef_entry_check_fn *check;          /* whole-entry check, or NULL */
    s_entry_t entries[EF_MAX_ENTRIES]; /* in the order first named */
    size_t n_entries;                  /* used entries */
} s_section_t;

struct ef_config {
    const ef_registry_t *registry;    /* borrowed */
    const ef_option_t *globals_table; /* borrowed */
    void *globals;                    /* owned struct of globals_size bytes */
    s_actor_cfg_t *actors;            /* one per registered definition */
    size_t n_actors;                  /* == registry size */
    ef_registry_t *plugins_into;      /* ef_config_enable_plugins, borrowed */
    char *plugins[EF_MAX_PLUGINS];    /* shared objects loaded, in order */
    size_t n_plugins;                 /* used entries */
    s_link_cfg_t links[EF_MAX_LINKS]; /* the topology: defaults, then the
                                         configuration's */
    size_t n_links;                   /* used entries */
    s_section_t *sections[EF_MAX_SECTIONS]; /* see ef_config_add_section */
    size_t n_sections;                      /* used entries */
    bool run_all;             /* no `run` given: everything here */
    bool run_given;           /* `run` was set: it wins over the host's */
    char *host;               /* `host`: this process's entry in hosts: */
    bool placed;              /* hosts: resolved into host_of */
    int64_t drain_idle_ms;    /* see ef_config_drain_idle_ms */
    int64_t drain_timeout_ms; /* see ef_config_drain_timeout_ms */
    char *curve_key;          /* curve.key: this process's secret key file */
    char *curve_clients;      /* curve.clients: directory of allowed keys */
    zcert_t *cert;            /* curve_key read by ef_config_load_keys */
};

static s_actor_cfg_t *
s_actor (const ef_config_t *self, const char *name)
{
    for (size_t i = 0; i < self->n_actors; i++)
        if (strcmp (self->actors[i].def->name, name) == 0)
            return &self->actors[i];
    return NULL;
}

static s_link_cfg_t *
s_link (const ef_config_t *self, const char *name)
{
    for (size_t i = 0; i < self->n_links; i++)
        if (strcmp (self->links[i].name, name) == 0)
            return (s_link_cfg_t *) &self->links[i];
    return NULL;
}

/* The link called name, made (with nothing set) when it is new and
   make is true. NULL when it is not there, or out of room or memory
   (why says which). */
static s_link_cfg_t *
s_link_make (ef_config_t *self, const char *name, bool make, char *why,
             size_t len)
{
    s_link_cfg_t *l = s_link (self, name);
    if (l || !make)
        return l;
    size_t n = strlen (name);
    if (n == 0 || n > 63
        || strspn (name, "abcdefghijklmnopqrstuvwxyz"
                         "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
               < n) {
        snprintf (why, len,
                  "'%.64s': a link name is 1 to 63 letters, digits, '_' or "
                  "'-'",
                  name);
        return NULL;
    }
    if (self->n_links == EF_MAX_LINKS) {
        snprintf (why, len, "at most %d links", EF_MAX_LINKS);
        return NULL;
    }
    l = &self->links[self->n_links];
    memset (l, 0, sizeof *l);
    if (!(l->name = strdup (name))) {
        snprintf (why, len, "out of memory");
        return NULL;
    }
    self->n_links++;
    return l;
}

/* Adds def to the actors of the configuration, with its defaults.
   Returns 0, -1 with err. */
static int
s_add_actor (ef_config_t *self, const ef_actor_def_t *def, char *err,
             size_t errlen)
{
    s_actor_cfg_t *grown =
        realloc (self->actors, (self->n_actors + 1) * sizeof *grown);
    if (!grown) {
        snprintf (err, errlen, "out of memory");
        return -1;
    }
    self->actors = grown;
    s_actor_cfg_t *a = &self->actors[self->n_actors];
    memset (a, 0, sizeof *a);
    a->def = def;
    a->instances = def->default_instances > 0 ? def->default_instances : 1;
    a->last = -1;
    a->restart = -1;
    for (int k = 0; k < EF_MAX_INSTANCES; k++)
        a->host_of[k] = -1;
    a->options = calloc (1, def->options_size ? def->options_size : 1);
    if (!a->options) {
        snprintf (err, errlen, "out of memory");
        return -1;
    }
    self->n_actors++;
    if (ef_options_defaults (s_restart_options, a, err, errlen) != 0)
        return -1;
    return ef_options_defaults (def->options, a->options, err, errlen);
}

ef_config_t *
ef_config_new (const ef_registry_t *registry, const ef_option_t *globals,
               size_t globals_size, char *err, size_t errlen)
{
    ef_config_t *self = calloc (1, sizeof *self);
    if (!self)
        goto oom;
    self->registry = registry;
    self->globals_table = globals;
    self->run_all = true;
    self->drain_idle_ms = 200;
    self->drain_timeout_ms = 60000;
    self->globals = calloc (1, globals_size ? globals_size : 1);
    if (!self->globals)
        goto oom;
    if (ef_options_defaults (globals, self->globals, err, errlen) != 0)
        goto fail;
    for (size_t i = 0; i < ef_registry_size (registry); i++)
        if (s_add_actor (self, ef_registry_at (registry, i), err, errlen))
            goto fail;
    const char *name, *from, *to;
    for (size_t i = 0;
         ef_registry_link_at (registry, i, &name, &from, &to) == 0; i++) {
        s_link_cfg_t *l = s_link_make (self, name, true, err, errlen);
        if (!l || (from && !(l->from = strdup (from)))
            || (to && !(l->to = strdup (to))))
            goto oom;
    }
    if (ef_config_add_section (self, "hosts", s_host_options, sizeof (s_host_t),
                               NULL, err, errlen)
        != 0)
        goto fail;
    return self;
oom:
    snprintf (err, errlen, "out of memory");
fail:
    ef_config_destroy (&self);
    return NULL;
}

void
ef_config_destroy (ef_config_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ef_config_t *self = *self_p;
    if (self->globals) {
        ef_options_free (self->globals_table, self->globals);
        free (self->globals);
    }
    for (size_t i = 0; self->actors && i < self->n_actors; i++) {
        if (self->actors[i].options) {
            ef_options_free (self->actors[i].def->options,
                             self->actors[i].options);
            free (self->actors[i].options);
        }
    }
    free (self->actors);
    for (size_t i = 0; i < self->n_plugins; i++)
        free (self->plugins[i]);
    for (size_t i = 0; i < self->n_links; i++) {
        free (self->links[i].name);
        free (self->links[i].from);
        free (self->links[i].to);
        free (self->links[i].endpoint);
        free (self->links[i].bind);
        free (self->links[i].server_key);
    }
    free (self->curve_key);
    free (self->curve_clients);
    free (self->host);
    zcert_destroy (&self->cert);
    for (size_t i = 0; i < self->n_sections; i++) {
        s_section_t *sec = self->sections[i];
        for (size_t e = 0; e < sec->n_entries; e++) {
            ef_options_free (sec->table, sec->entries[e].options);
            free (sec->entries[e].options);
            free (sec->entries[e].name);
        }
        free (sec->name);
        free (sec);
    }
    free (self);
    *self_p = NULL;
}

/* Parses a `run` list, "a,b:0-1,c:2" (an actor, or one instance or a
   range of them), into first[]/last[] per actor (-2: not listed; last
   -1: through the last). Returns 0, or -1 with why. */
static int
s_parse_run (const ef_config_t *self, const char *value, int *first, int *last,
             char *why, size_t len)
{
    for (size_t i = 0; i < self->n_actors; i++)
        first[i] = last[i] = -2;
    char *copy = strdup (value);
    if (!copy) {
        snprintf (why, len, "out of memory");
        return -1;
    }
    int rc = 0;
    char *save = NULL;
    for (char *t = strtok_r (copy, ", ", &save); t && rc == 0;
         t = strtok_r (NULL, ", ", &save)) {
        char *colon = strchr (t, ':');
        if (colon)
            *colon = 0;
        s_actor_cfg_t *a = s_actor (self, t);
        if (!a) {
            snprintf (why, len, "'%s' is not an actor of this program", t);
            rc = -1;
            break;
        }
        size_t i = (size_t) (a - self->actors);
        if (first[i] != -2) {
            snprintf (why, len, "'%s' is named twice (give one range, A-B)", t);
            rc = -1;
            break;
        }
        first[i] = 0;
        last[i] = -1;
        if (!colon)
            continue;
        char *end;
        long lo = strtol (colon + 1, &end, 10), hi = lo;
        if (end != colon + 1 && *end == '-')
            hi = strtol (end + 1, &end, 10);
        if (end == colon + 1 || *end || lo < 0 || hi < lo
            || hi >= EF_MAX_INSTANCES) {
            snprintf (why, len,
                      "'%s:%s': an instance range is N or A-B (0-based, A <= "
                      "B)",
                      t, colon + 1);
            rc = -1;
            break;
        }
        first[i] = (int) lo;
        last[i] = (int) hi;
    }
    free (copy);
    return rc;
}

/* Applies a `run` list (see s_parse_run) or "all". */
static int
s_set_run (ef_config_t *self, const char *value, char *err, size_t errlen)
{
    if (strcmp (value, "all") == 0 || !*value) {
        self->run_all = true;
        for (size_t i = 0; i < self->n_actors; i++) {
            self->actors[i].first = 0;
            self->actors[i].last = -1;
        }
        return 0;
    }
    int first[EF_MAX_ENTRIES], last[EF_MAX_ENTRIES];
    if (self->n_actors > EF_MAX_ENTRIES) {
        snprintf (err, errlen, "too many actors");
        return -1;
    }
    if (s_parse_run (self, value, first, last, err, errlen) != 0)
        return -1;
    self->run_all = false;
    for (size_t i = 0; i < self->n_actors; i++) {
        s_actor_cfg_t *a = &self->actors[i];
        a->runs_here = first[i] != -2;
        a->first = a->runs_here ? first[i] : 0;
        a->last = a->runs_here ? last[i] : -1;
    }
    return 0;
}

static s_section_t *
s_section (const ef_config_t *self, const char *name, size_t len)
{
    for (size_t i = 0; i < self->n_sections; i++)
        if (strlen (self->sections[i]->name) == len
            && strncmp (self->sections[i]->name, name, len) == 0)
            return self->sections[i];
    return NULL;
}

int
ef_config_add_section (ef_config_t *self, const char *name,
                       const ef_option_t *table, size_t entry_size,
                       ef_entry_check_fn *check, char *err, size_t errlen)
{
    if (self->n_sections == EF_MAX_SECTIONS
        || s_section (self, name, strlen (name))) {
        snprintf (err, errlen,
                  "section %s: too many sections or declared twice", name);
        return -1;
    }
    s_section_t *sec = calloc (1, sizeof *sec);
    if (!sec || !(sec->name = strdup (name))) {
        free (sec);
        snprintf (err, errlen, "out of memory");
        return -1;
    }
    sec->table = table;
    sec->entry_size = entry_size ? entry_size : 1;
    sec->check = check;
    self->sections[self->n_sections++] = sec;
    return 0;
}

/* Sets KEY of entry NAME ("NAME.KEY" in rest), creating the entry with
   the table's defaults when it is new. */
static int
s_set_entry (s_section_t *sec, const char *rest, const char *value, char *err,
             size_t errlen)
{
    const char *dot = strchr (rest, '.');
    size_t len = dot ? (size_t) (dot - rest) : strlen (rest);
    if (!dot || len == 0 || !dot[1]) {
        snprintf (err, errlen, "expected %s.NAME.KEY", sec->name);
        return -1;
    }
    if (len > 63
        || strspn (rest, "abcdefghijklmnopqrstuvwxyz"
                         "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
               < len) {
        snprintf (err, errlen,
                  "'%.*s': a name is 1 to 63 letters, digits, '_' or '-'",
                  (int) (len > 80 ? 80 : len), rest);
        return -1;
    }
    s_entry_t *entry = NULL;
    for (size_t i = 0; i < sec->n_entries && !entry; i++)
        if (strlen (sec->entries[i].name) == len
            && strncmp (sec->entries[i].name, rest, len) == 0)
            entry = &sec->entries[i];
    if (!entry) {
        if (sec->n_entries == EF_MAX_ENTRIES) {
            snprintf (err, errlen, "at most %d entries", EF_MAX_ENTRIES);
            return -1;
        }
        s_entry_t fresh = {strndup (rest, len), calloc (1, sec->entry_size)};
        if (!fresh.name || !fresh.options) {
            free (fresh.name);
            free (fresh.options);
            snprintf (err, errlen, "out of memory");
            return -1;
        }
        if (ef_options_defaults (sec->table, fresh.options, err, errlen) != 0) {
            free (fresh.name);
            free (fresh.options);
            return -1;
        }
        sec->entries[sec->n_entries] = fresh;
        entry = &sec->entries[sec->n_entries++];
        if (ef_options_set (sec->table, entry->options, dot + 1, value, err,
                            errlen)
            == 0)
            return 0;
        /* a key that does not take leaves no entry behind */
        ef_options_free (sec->table, entry->options);
        free (entry->options);
        free (entry->name);
        sec->n_entries--;
        return -1;
    }
    return ef_options_set (sec->table, entry->options, dot + 1, value, err,
                           errlen);
}

size_t
ef_config_section_size (const ef_config_t *self, const char *section)
{
    s_section_t *sec = s_section (self, section, strlen (section));
    return sec ? sec->n_entries : 0;
}

void *
ef_config_section_entry (const ef_config_t *self, const char *section, size_t i,
                         const char **name)
{
    s_section_t *sec = s_section (self, section, strlen (section));
    if (!sec || i >= sec->n_entries)
        return NULL;
    if (name)
        *name = sec->entries[i].name;
    return sec->entries[i].options;
}

void *
ef_config_section_find (const ef_config_t *self, const char *section,
                        const char *name)
{
    const char *n;
    void *entry;
    for (size_t i = 0; (entry = ef_config_section_entry (self, section, i, &n));
         i++)
        if (strcmp (n, name) == 0)
            return entry;
    return NULL;
}

/* Checks an endpoint's scheme. */
static int
s_check_endpoint (const char *v, char *err, size_t errlen)
{
    if (strncmp (v, "inproc://", 9) == 0 || strncmp (v, "tcp://", 6) == 0
        || strncmp (v, "ipc://", 6) == 0)
        return 0;
    snprintf (err, errlen,
              "'%s' is not a ZeroMQ endpoint (inproc://, tcp:// or ipc://)", v);
    return -1;
}

void
ef_config_enable_plugins (ef_config_t *self, ef_registry_t *registry)
{
    self->plugins_into = registry;
}

/* Loads each shared object of a `plugins` list that is not loaded yet
   and adds the actors it registered. Returns 0, -1 with why naming the
   file. */
static int
s_set_plugins (ef_config_t *self, const char *value, char *why, size_t len)
{
    if (!self->plugins_into) {
        snprintf (why, len, "unknown key (this program loads no plugins)");
        return -1;
    }
    char *copy = strdup (value);
    if (!copy) {
        snprintf (why, len, "out of memory");
        return -1;
    }
    int rc = 0;
    char *save = NULL;
    for (char *t = strtok_r (copy, ",", &save); t && rc == 0;
         t = strtok_r (NULL, ",", &save)) {
        while (isspace ((unsigned char) *t))
            t++;
        size_t n = strlen (t);
        while (n > 0 && isspace ((unsigned char) t[n - 1]))
            t[--n] = 0;
        bool seen = n == 0;
        for (size_t i = 0; i < self->n_plugins && !seen; i++)
            seen = strcmp (self->plugins[i], t) == 0;
        if (seen)
            continue;
        if (self->n_plugins == EF_MAX_PLUGINS) {
            snprintf (why, len, "at most %d plugins", EF_MAX_PLUGINS);
            rc = -1;
        }
        else if (ef_registry_load_plugin (self->plugins_into, t, why, len) != 0)
            rc = -1;
        else if (!(self->plugins[self->n_plugins] = strdup (t))) {
            snprintf (why, len, "out of memory");
            rc = -1;
        }
        else
            self->n_plugins++;
        for (size_t i = self->n_actors;
             rc == 0 && i < ef_registry_size (self->plugins_into); i++)
            rc = s_add_actor (self, ef_registry_at (self->plugins_into, i), why,
                              len);
    }
    free (copy);
    return rc;
}

/* Checks a `from` or `to` value: comma-separated ACTOR.PORT items
   (one for `to`). Whether they name real ports is for
   ef_config_validate, since a plugin may bring the actor later. */
static int
s_check_refs (const char *value, bool one, char *why, size_t len)
{
    int n = 0;
    for (const char *p = value; *p;) {
        p += strspn (p, " \t,");
        size_t l = strcspn (p, ",");
        while (l > 0 && isspace ((unsigned char) p[l - 1]))
            l--;
        if (l == 0)
            break;
        const char *dot = memchr (p, '.', l);
        if (!dot || dot == p || dot == p + l - 1 || memchr (p, ' ', l)) {
            snprintf (why, len, "'%.*s' is not ACTOR.PORT", (int) l, p);
            return -1;
        }
        n++;
        p += l;
        p += strcspn (p, ",");
    }
    if (n == 0 || (one && n > 1)) {
        snprintf (why, len,
                  one ? "one port, ACTOR.PORT (a link has one consumer)"
                      : "a list of ports, ACTOR.PORT");
        return -1;
    }
    return 0;
}

int
ef_config_set (ef_config_t *self, const char *path, const char *value,
               char *err, size_t errlen)
{
    char why[512] = "";
    int rc = -1;
    if (!value) {
        snprintf (why, sizeof why, "a value is required");
        goto done;
    }
    if (strcmp (path, "run") == 0) {
        rc = s_set_run (self, value, why, sizeof why);
        self->run_given = self->run_given || rc == 0;
        goto done;
    }
    if (strcmp (path, "plugins") == 0) {
        rc = s_set_plugins (self, value, why, sizeof why);
        goto done;
    }
    if (strcmp (path, "host") == 0) {
        free (self->host);
        self->host = *value ? strdup (value) : NULL;
        self->placed = false;
        rc = 0;
        goto done;
    }
    if (strcmp (path, "drain_idle") == 0 || strcmp (path, "drain-idle") == 0) {
        ef_option_t t[] = {{"drain_idle", EF_OPT_MS, NULL,
                            offsetof (ef_config_t, drain_idle_ms), 1, 600000,
                            ""},
                           EF_OPTION_END};
        rc = ef_options_set (t, self, "drain_idle", value, why, sizeof why);
        goto done;
    }
    if (strcmp (path, "drain_timeout") == 0
        || strcmp (path, "drain-timeout") == 0) {
        ef_option_t t[] = {{"drain_timeout", EF_OPT_MS, NULL,
                            offsetof (ef_config_t, drain_timeout_ms), 100,
                            86400000, ""},
                           EF_OPTION_END};
        rc = ef_options_set (t, self, "drain_timeout", value, why, sizeof why);
        goto done;
    }
    if (strncmp (path, "actors.", 7) == 0) {
        const char *name = path + 7;
        const char *dot = strchr (name, '.');
        if (!dot) {
            snprintf (why, sizeof why, "expected actors.NAME.KEY");
            goto done;
        }
        char actor[64];
        snprintf (actor, sizeof actor, "%.*s", (int) (dot - name), name);
        s_actor_cfg_t *a = s_actor (self, actor);
        if (!a) {
            snprintf (why, sizeof why, "'%s' is not an actor of this program",
                      actor);
            goto done;
        }
        const char *key = dot + 1;
        if (strcmp (key, "instances") == 0) {
            ef_option_t t[] = {{"instances", EF_OPT_INT, NULL, 0, 1, 256, ""},
                               EF_OPTION_END};
            int64_t n = 0;
            rc = ef_options_set (t, &n, key, value, why, sizeof why);
            if (rc == 0)
                a->instances = (int) n;
            self->placed = false;
            goto done;
        }
        if (strcmp (key, "restart") == 0) {
            if (strcmp (value, "always") == 0 || strcmp (value, "never") == 0) {
                a->restart = strcmp (value, "always") == 0;
                rc = 0;
            }
            else
                snprintf (why, sizeof why,
                          "'%s' is not a restart policy: always or never",
                          value);
            goto done;
        }
        if (ef_options_find (s_restart_options, key)
            && !ef_options_find (a->def->options, key)) {
            rc = ef_options_set (s_restart_options, a, key, value, why,
                                 sizeof why);
            goto done;
        }
        rc = ef_options_set (a->def->options, a->options, key, value, why,
                             sizeof why);
        goto done;
    }
    if (strncmp (path, "links.", 6) == 0) {
        const char *name = path + 6;
        const char *dot = strchr (name, '.');
        char link[64];
        snprintf (link, sizeof link, "%.*s",
                  (int) (dot ? dot - name : (ptrdiff_t) strlen (name)), name);
        if (!dot) {
            snprintf (why, sizeof why, "expected links.NAME.KEY");
            goto done;
        }
        /* A new name makes a new link: ef_config_validate then wants
           its from and to. */
        s_link_cfg_t *l = s_link_make (self, link, true, why, sizeof why);
        if (!l)
            goto done;
        const char *key = dot + 1;
        if (strcmp (key, "from") == 0 || strcmp (key, "to") == 0) {
            bool to = key[0] == 't';
            if (s_check_refs (value, to, why, sizeof why) != 0)
                goto done;
            char **field = to ? &l->to : &l->from;
            free (*field);
            *field = strdup (value);
            rc = *field ? 0 : -1;
            goto done;
        }
        if (strcmp (key, "hwm") == 0) {
            ef_option_t t[] = {{"hwm", EF_OPT_INT, NULL, 0, 1, 1000000, ""},
                               EF_OPTION_END};
            int64_t n = 0;
            rc = ef_options_set (t, &n, key, value, why, sizeof why);
            if (rc == 0)
                l->hwm = (int) n;
            goto done;
        }
        if (strcmp (key, "max_message") == 0
            || strcmp (key, "max-message") == 0) {
            ef_option_t t[] = {{"max_message", EF_OPT_SIZE, NULL,
                                offsetof (s_link_cfg_t, max_message), 1024,
                                (int64_t) 1 << 40, ""},
                               EF_OPTION_END};
            rc = ef_options_set (t, l, key, value, why, sizeof why);
            goto done;
        }
        if (strcmp (key, "peer_timeout") == 0
            || strcmp (key, "peer-timeout") == 0) {
            ef_option_t t[] = {{"peer_timeout", EF_OPT_MS, NULL,
                                offsetof (s_link_cfg_t, peer_timeout), 0,
                                (int64_t) 86400000, ""},
                               EF_OPTION_END};
            rc = ef_options_set (t, l, "peer_timeout", value, why, sizeof why);
            l->peer_timeout_set = l->peer_timeout_set || rc == 0;
            goto done;
        }
        if (strcmp (key, "insecure") == 0) {
            ef_option_t t[] = {{"insecure", EF_OPT_BOOL, NULL,
                                offsetof (s_link_cfg_t, insecure), 0, 0, ""},
                               EF_OPTION_END};
            rc = ef_options_set (t, l, key, value, why, sizeof why);
            goto done;
        }
        char **field = strcmp (key, "endpoint") == 0     ? &l->endpoint
                       : strcmp (key, "bind") == 0       ? &l->bind
                       : strcmp (key, "server_key") == 0 ? &l->server_key
                       : strcmp (key, "server-key") == 0 ? &l->server_key
                                                         : NULL;
        if (!field) {
            snprintf (why, sizeof why,
                      "unknown key (known: from, to, endpoint, bind, hwm, "
                      "server_key, insecure, max_message, peer_timeout)");
            goto done;
        }
        if (field != &l->server_key
            && s_check_endpoint (value, why, sizeof why) != 0)
            goto done;
        if (field == &l->server_key && !*value) {
            snprintf (why, sizeof why,
                      "a key file or a 40-character Z85 public key");
            goto done;
        }
        free (*field);
        *field = strdup (value);
        rc = *field ? 0 : -1;
        goto done;
    }
    if (strncmp (path, "curve.", 6) == 0) {
        const char *key = path + 6;
        char **field = strcmp (key, "key") == 0       ? &self->curve_key
                       : strcmp (key, "clients") == 0 ? &self->curve_clients
                                                      : NULL;
        if (!field)
            snprintf (why, sizeof why, "unknown key (known: key, clients)");
        else if (!*value)
            snprintf (why, sizeof why, "a path is required");
        else {
            free (*field);
            *field = strdup (value);
            rc = *field ? 0 : -1;
        }
        goto done;
    }
    const char *dot = strchr (path, '.');
    s_section_t *sec =
        dot ? s_section (self, path, (size_t) (dot - path)) : NULL;
    if (sec) {
        rc = s_set_entry (sec, dot + 1, value, why, sizeof why);
        goto done;
    }
    rc = ef_options_set (self->globals_table, self->globals, path, value, why,
                         sizeof why);
done:
    if (rc != 0)
        snprintf (err, errlen, "%s: %s", path, why);
    return rc;
}

/* --- YAML ------------------------------------------------------------- */

typedef struct {
    ef_config_t *config; /* target */
    const char *file;    /* for messages */
    char *err;           /* caller's buffer */
    size_t errlen;       /* its size */
    bool plugins_done;   /* the top-level `plugins` was read first */
} s_yaml_ctx_t;

static int
s_node_line (struct fy_node *n)
{
    struct fy_token *t = fy_node_get_scalar_token (n);
    const struct fy_mark *m = t ? fy_token_start_mark (t) : NULL;
    return m ? m->line + 1 : 0;
}

/* Replaces ${VAR} and ${VAR:-default} in text with the environment's
   values into out; "$${" stands for a literal "${" and any other '$' is
   kept. The default is taken as written (no nesting) when VAR is unset
   or empty. The replaced text is not read as YAML again, so a value
   cannot add keys. Returns 0, or -1 with why naming the variable: one
   that is unset without a default, a malformed ${...}, or a result that
   does not fit out. */
static int
s_interpolate (const char *text, char *out, size_t outlen, char *why,
               size_t whylen)
{
    size_t used = 0;
    for (const char *p = text; *p;) {
        const char *piece = p;
        size_t n = 1;
        if (p[0] == '$' && p[1] == '$' && p[2] == '{') {
            piece = "${";
            n = 2;
            p += 3;
        }
        else if (p[0] == '$' && p[1] == '{') {
            const char *name = p + 2;
            const char *close = strchr (name, '}');
            size_t len = strspn (name, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                       "abcdefghijklmnopqrstuvwxyz0123456789_");
            if (!close) {
                snprintf (why, whylen,
                          "'${' without a closing '}' (write $${ for a "
                          "literal ${)");
                return -1;
            }
            bool has_default = strncmp (name + len, ":-", 2) == 0;
            if (len == 0 || len > 255 || (name[0] >= '0' && name[0] <= '9')
                || (name + len != close && !has_default)) {
                snprintf (why, whylen,
                          "'${%.*s}' is not ${NAME} or ${NAME:-default} "
                          "(NAME: letters, digits and '_')",
                          (int) (close - name > 64 ? 64 : close - name), name);
                return -1;
            }
            char var[256];
            memcpy (var, name, len);
            var[len] = 0;
            const char *value = getenv (var);
            if (has_default && (!value || !*value)) {
                piece = name + len + 2;
                n = (size_t) (close - piece);
            }
            else if (!value) {
                snprintf (why, whylen,
                          "${%s} is not set (set it, or give a default: "
                          "${%s:-VALUE})",
                          var, var);
                return -1;
            }
            else {
                piece = value;
                n = strlen (value);
            }
            p = close + 1;
        }
        else
            p++;
        if (n >= outlen - used) {
            snprintf (why, whylen,
                      "longer than %zu bytes once ${...} are "
                      "replaced",
                      outlen - 1);
            return -1;
        }
        memcpy (out + used, piece, n);
        used += n;
    }
    out[used] = 0;
    return 0;
}

/* Flattens node under `path` into ef_config_set calls, each value with
   its ${VAR}s replaced (s_interpolate). Sequences become comma lists
   (used by `run`). */
static int
s_yaml_walk (s_yaml_ctx_t *ctx, struct fy_node *node, const char *path,
             int line)
{
    enum fy_node_type type = fy_node_get_type (node);
    if (type == FYNT_MAPPING) {
        void *iter = NULL;
        struct fy_node_pair *pair;
        while ((pair = fy_node_mapping_iterate (node, &iter))) {
            struct fy_node *k = fy_node_pair_key (pair);
            const char *key = k ? fy_node_get_scalar0 (k) : NULL;
            if (!key) {
                snprintf (ctx->err, ctx->errlen, "%s:%d: keys must be scalars",
                          ctx->file, line);
                return -1;
            }
            if (ctx->plugins_done && !*path && strcmp (key, "plugins") == 0)
                continue;
            char sub[256];
            snprintf (sub, sizeof sub, "%s%s%s", path, *path ? "." : "", key);
            struct fy_node *v = fy_node_pair_value (pair);
            int kline = s_node_line (k);
            if (!v) {
                snprintf (ctx->err, ctx->errlen,
                          "%s:%d: %s: a value is required", ctx->file, kline,
                          sub);
                return -1;
            }
            if (s_yaml_walk (ctx, v, sub, kline) != 0)
                return -1;
        }
        return 0;
    }
    char value[4096] = "";
    char why[1024];
    if (type == FYNT_SEQUENCE) {
        size_t used = 0;
        void *iter = NULL;
        struct fy_node *item;
        while ((item = fy_node_sequence_iterate (node, &iter))) {
            const char *s = fy_node_get_scalar0 (item);
            if (!s) {
                snprintf (ctx->err, ctx->errlen,
                          "%s:%d: %s: list items must be scalars", ctx->file,
                          line, path);
                return -1;
            }
            if (used && used + 1 < sizeof value)
                value[used++] = ',';
            if (s_interpolate (s, value + used, sizeof value - used, why,
                               sizeof why)
                != 0) {
                snprintf (ctx->err, ctx->errlen, "%s:%d: %s: %s", ctx->file,
                          line, path, why);
                return -1;
            }
            used += strlen (value + used);
        }
    }
    else {
        const char *s = fy_node_get_scalar0 (node);
        if (s_interpolate (s ? s : "", value, sizeof value, why, sizeof why)
            != 0) {
            snprintf (ctx->err, ctx->errlen, "%s:%d: %s: %s", ctx->file, line,
                      path, why);
            return -1;
        }
    }
    if (ef_config_set (ctx->config, path, value, why, sizeof why) != 0) {
        snprintf (ctx->err, ctx->errlen, "%s:%d: %s", ctx->file, line, why);
        return -1;
    }
    return 0;
}

/* Checks that the file at path is UTF-8 text of a sane size. libfyaml
   (0.8) spins forever on some bytes that are not UTF-8 (a directive
   line "%\xec"), so they never reach it. Returns 0, -1 with err naming
   the file and the line. */
static int
s_check_text (const char *path, char *err, size_t errlen)
{
    FILE *f = fopen (path, "rb");
    if (!f) {
        snprintf (err, errlen, "%s: %s", path, strerror (errno));
        return -1;
    }
    enum { S_MAX = 16 << 20 };
    unsigned char buf[4096 + 4];
    size_t have = 0, total = 0;
    int line = 1, rc = 0;
    while (rc == 0) {
        size_t got = fread (buf + have, 1, sizeof buf - 4 - have, f);
        if (got == 0 && have == 0)
            break;
        total += got;
        size_t end = have + got, i = 0;
        bool eof = got == 0;
        while (i < end) {
            /* A sequence cut by the buffer's end waits for more bytes. */
            if (!eof && end - i < 4 && buf[i] >= 0x80)
                break;
            size_t n = ef_utf8_seq (buf + i, end - i);
            if (n == 0 || buf[i] == 0) {
                snprintf (err, errlen, "%s:%d: not UTF-8 text", path, line);
                rc = -1;
                break;
            }
            line += buf[i] == '\n';
            i += n;
        }
        memmove (buf, buf + i, end - i);
        have = end - i;
        if (eof)
            break;
        if (total > S_MAX) {
            snprintf (err, errlen, "%s: larger than %d MB", path, S_MAX >> 20);
            rc = -1;
        }
    }
    if (rc == 0 && ferror (f)) {
        snprintf (err, errlen, "%s: %s", path, strerror (errno));
        rc = -1;
    }
    fclose (f);
    return rc;
}

int
ef_config_load_file (ef_config_t *self, const char *path, char *err,
                     size_t errlen)
{
    if (s_check_text (path, err, errlen) != 0)
        return -1;
    struct fy_parse_cfg cfg = {.flags = FYPCF_QUIET};
    struct fy_document *doc = fy_document_build_from_file (&cfg, path);
    if (!doc) {
        snprintf (err, errlen, "%s: not valid YAML", path);
        return -1;
    }
    int rc = 0;
    struct fy_node *root = fy_document_root (doc);
    if (root && fy_node_get_type (root) != FYNT_MAPPING) {
        snprintf (err, errlen, "%s: the top level must be a mapping", path);
        rc = -1;
    }
    else if (root) {
        s_yaml_ctx_t ctx = {self, path, err, errlen, false};
        /* Plugins first: the rest of the file may name their actors. */
        struct fy_node *plugins =
            fy_node_mapping_lookup_by_string (root, "plugins", FY_NT);
        if (plugins) {
            struct fy_node *key =
                fy_node_mapping_lookup_key_by_string (root, "plugins", FY_NT);
            rc = s_yaml_walk (&ctx, plugins, "plugins",
                              key ? s_node_line (key) : 1);
            ctx.plugins_done = true;
        }
        if (rc == 0)
            rc = s_yaml_walk (&ctx, root, "", 1);
    }
    fy_document_destroy (doc);
    return rc;
}

/* --- topology queries --------------------------------------------------- */

/* The next ACTOR.PORT item of a comma list at *p: its start and length
   (trimmed), *p moved past it. NULL at the end. */
static const char *
s_next_ref (const char **p, size_t *len)
{
    const char *q = *p;
    q += strspn (q, " \t,");
    if (!*q)
        return NULL;
    size_t l = strcspn (q, ",");
    *p = q + l;
    while (l > 0 && isspace ((unsigned char) q[l - 1]))
        l--;
    *len = l;
    return q;
}

/* Finds the port ref (ACTOR.PORT, len bytes) names: the actor's index
   in *actor and the port in *port. Returns 0, or -1 with why saying
   what is not there. */
static int
s_port_ref (const ef_config_t *self, const char *ref, size_t len, size_t *actor,
            const ef_port_def_t **port, char *why, size_t whylen)
{
    const char *dot = memchr (ref, '.', len);
    size_t alen = dot ? (size_t) (dot - ref) : len;
    for (size_t i = 0; i < self->n_actors; i++) {
        const ef_actor_def_t *def = self->actors[i].def;
        if (strlen (def->name) != alen || strncmp (def->name, ref, alen) != 0)
            continue;
        char known[256] = "";
        size_t used = 0;
        for (const ef_port_def_t *p = def->ports; p && p->name; p++) {
            if (dot && strlen (p->name) == len - alen - 1
                && strncmp (p->name, dot + 1, len - alen - 1) == 0) {
                *actor = i;
                *port = p;
                return 0;
            }
            int n = snprintf (known + used, sizeof known - used, "%s%s",
                              used ? ", " : "", p->name);
            if (n > 0 && (size_t) n < sizeof known - used)
                used += (size_t) n;
        }
        snprintf (why, whylen, "actor %s has no port '%.*s' (its ports: %s)",
                  def->name, dot ? (int) (len - alen - 1) : 0,
                  dot ? dot + 1 : "", used ? known : "none");
        return -1;
    }
    snprintf (why, whylen, "'%.*s' is not an actor of this program", (int) alen,
              ref);
    return -1;
}

const ef_actor_def_t *
ef_config_link_consumer (const ef_config_t *self, const char *link,
                         const ef_port_def_t **port)
{
    const s_link_cfg_t *l = s_link (self, link);
    size_t a;
    const ef_port_def_t *p;
    char why[256];
    if (!l || !l->to
        || s_port_ref (self, l->to, strlen (l->to), &a, &p, why, sizeof why)
        || p->dir != EF_PORT_IN)
        return NULL;
    if (port)
        *port = p;
    return self->actors[a].def;
}

/* True when actor a is an end of link l: its consumer (in) or one of
   its producers (out). */
static bool
s_joins (const ef_config_t *self, const s_link_cfg_t *l, size_t a, bool in)
{
    char why[256];
    size_t ai, len;
    const ef_port_def_t *p;
    const char *list = in ? l->to : l->from;
    for (const char *r, *at = list ? list : ""; (r = s_next_ref (&at, &len));)
        if (s_port_ref (self, r, len, &ai, &p, why, sizeof why) == 0 && ai == a)
            return true;
    return false;
}

size_t
ef_config_port_links (const ef_config_t *self, const char *actor,
                      const char *port, const char **links, size_t max)
{
    size_t n = 0, alen = strlen (actor), plen = strlen (port), len;
    for (size_t i = 0; i < self->n_links; i++) {
        const s_link_cfg_t *l = &self->links[i];
        for (int side = 0; side < 2; side++) {
            const char *list = side ? l->to : l->from;
            bool hit = false;
            for (const char *r, *at = list ? list : "";
                 !hit && (r = s_next_ref (&at, &len));)
                hit = len == alen + 1 + plen && strncmp (r, actor, alen) == 0
                      && r[alen] == '.'
                      && strncmp (r + alen + 1, port, plen) == 0;
            if (hit && n < max)
                links[n] = l->name;
            n += hit;
        }
    }
    return n;
}

size_t
ef_config_link_count (const ef_config_t *self)
{
    return self->n_links;
}

const char *
ef_config_link_name (const ef_config_t *self, size_t i)
{
    return i < self->n_links ? self->links[i].name : NULL;
}

int
ef_config_link_ends (const ef_config_t *self, const char *link,
                     const char **from, const char **to)
{
    const s_link_cfg_t *l = s_link (self, link);
    if (!l)
        return -1;
    *from = l->from;
    *to = l->to;
    return 0;
}

const char *
ef_config_link_type (const ef_config_t *self, const char *link)
{
    const ef_port_def_t *in = NULL;
    return ef_config_link_consumer (self, link, &in) ? in->type : NULL;
}

/* The hosts: entry running instance index (-1: the first) of the actor
   that consumes link, NULL when there is no placement or none runs it. */
static const s_host_t *
s_consumer_host (const ef_config_t *self, const char *link, int index,
                 const char **name)
{
    const ef_actor_def_t *def = ef_config_link_consumer (self, link, NULL);
    const s_actor_cfg_t *a = def ? s_actor (self, def->name) : NULL;
    int k = index < 0 ? 0 : index;
    if (!self->placed || !a || k >= EF_MAX_INSTANCES || a->host_of[k] < 0)
        return NULL;
    return ef_config_section_entry (self, "hosts", (size_t) a->host_of[k],
                                    name);
}

int
ef_config_link_endpoint (const ef_config_t *self, const char *link, bool bind,
                         int index, char *out, size_t len)
{
    const s_link_cfg_t *l = s_link (self, link);
    const char *pattern = l ? (bind && l->bind ? l->bind : l->endpoint) : NULL;
    char deflt[128];
    if (!pattern) {
        snprintf (deflt, sizeof deflt,
                  index >= 0 ? "inproc://%s-{i}" : "inproc://%s", link);
        pattern = deflt;
    }
    /* {host}: the address of the host that runs the consuming instance */
    char hosted[512];
    const char *hmark = strstr (pattern, "{host}");
    if (hmark) {
        const s_host_t *h = s_consumer_host (self, link, index, NULL);
        if (!h || !h->address)
            return -1;
        int n =
            snprintf (hosted, sizeof hosted, "%.*s%s%s",
                      (int) (hmark - pattern), pattern, h->address, hmark + 6);
        if (n < 0 || (size_t) n >= sizeof hosted)
            return -1;
        pattern = hosted;
    }
    const char *mark = strstr (pattern, "{i}");
    int n;
    if (index >= 0 && mark)
        n = snprintf (out, len, "%.*s%d%s", (int) (mark - pattern), pattern,
                      index, mark + 3);
    else if (index >= 0 && strncmp (pattern, "tcp://", 6) == 0) {
        const char *colon = strrchr (pattern, ':');
        char *end;
        long port = colon ? strtol (colon + 1, &end, 10) : -1;
        if (!colon || *end || port <= 0)
            return -1;
        n = snprintf (out, len, "%.*s:%ld", (int) (colon - pattern), pattern,
                      port + index);
    }
    else if (index >= 0)
        n = snprintf (out, len, "%s-%d", pattern, index);
    else
        n = snprintf (out, len, "%s", pattern);
    return n > 0 && (size_t) n < len ? 0 : -1;
}

int
ef_config_link_hwm (const ef_config_t *self, const char *link, int port_default)
{
    const s_link_cfg_t *l = s_link (self, link);
    return l && l->hwm > 0 ? l->hwm : port_default;
}

const ef_registry_t *
ef_config_registry (const ef_config_t *self)
{
    return self->registry;
}

int64_t
ef_config_drain_idle_ms (const ef_config_t *self)
{
    return self->drain_idle_ms;
}

int64_t
ef_config_drain_timeout_ms (const ef_config_t *self)
{
    return self->drain_timeout_ms;
}

void *
ef_config_globals (ef_config_t *self)
{
    return self->globals;
}

void *
ef_config_actor_options (ef_config_t *self, const char *actor)
{
    s_actor_cfg_t *a = s_actor (self, actor);
    return a ? a->options : NULL;
}

ef_restarts_t
ef_config_restarts (const ef_config_t *self, const char *actor)
{
    const s_actor_cfg_t *a = s_actor (self, actor);
    if (!a)
        return ef_restarts_make (false, 0, 1);
    return ef_restarts_make (a->restart < 0 ? a->def->restart : a->restart == 1,
                             (int) a->max_restarts, a->restart_window);
}

int
ef_config_instances (const ef_config_t *self, const char *actor)
{
    s_actor_cfg_t *a = s_actor (self, actor);
    return a ? a->instances : 0;
}

bool
ef_config_runs_here (const ef_config_t *self, const char *actor)
{
    s_actor_cfg_t *a = s_actor (self, actor);
    return a && (self->run_all || a->runs_here);
}

bool
ef_config_link_crosses_hosts (const ef_config_t *self, const char *link)
{
    char ep[256];
    /* per-instance links derive one endpoint per index: the first tells */
    for (int index = -1; index <= 0; index++)
        if (ef_config_link_endpoint (self, link, false, index, ep, sizeof ep)
                == 0
            && strncmp (ep, "tcp://", 6) == 0)
            return true;
    return false;
}

bool
ef_config_instance_runs_here (const ef_config_t *self, const char *actor,
                              int index)
{
    s_actor_cfg_t *a = s_actor (self, actor);
    return a && (self->run_all || a->runs_here) && index >= a->first
           && (a->last < 0 || index <= a->last) && index < a->instances;
}

/* True when this process runs some but not all instances of a. */
static bool
s_partly_here (const ef_config_t *self, const s_actor_cfg_t *a)
{
    return (self->run_all || a->runs_here)
           && (a->first > 0 || (a->last >= 0 && a->last < a->instances - 1));
}

/* Whether def has ports: an actor without any (a background worker
   such as the index-sealer) joins no link, so no placement can leave
   one of its peers waiting. */
static bool
s_has_ports (const ef_actor_def_t *def)
{
    return def->ports && def->ports[0].name;
}

/* Resolves hosts: (placement) into each actor's host_of and, when `host`
   names this process's entry and `run` was not given, applies that
   entry's run list. Every instance of every actor with ports must run
   on exactly one host; one without ports that no host names runs on
   none (an existing placement stays valid when such an actor is
   added). Returns 0, or -1 with err naming the key. */
static int
s_resolve_hosts (ef_config_t *self, char *err, size_t errlen)
{
    for (size_t i = 0; i < self->n_actors; i++)
        for (int k = 0; k < EF_MAX_INSTANCES; k++)
            self->actors[i].host_of[k] = -1;
    self->placed = false;
    size_t n = ef_config_section_size (self, "hosts");
    for (size_t i = 0; n == 0 && i < self->n_links; i++) {
        const s_link_cfg_t *l = &self->links[i];
        const char *key = l->endpoint && strstr (l->endpoint, "{host}")
                              ? "endpoint"
                          : l->bind && strstr (l->bind, "{host}") ? "bind"
                                                                  : NULL;
        if (key) {
            snprintf (err, errlen,
                      "links.%s.%s: {host} needs a hosts: section "
                      "(placement)",
                      l->name, key);
            return -1;
        }
    }
    if (n == 0) {
        if (self->host) {
            snprintf (err, errlen,
                      "host: '%s' needs a hosts: section naming "
                      "it",
                      self->host);
            return -1;
        }
        return 0;
    }
    if (self->n_actors > EF_MAX_ENTRIES) {
        snprintf (err, errlen, "too many actors");
        return -1;
    }
    int first[EF_MAX_ENTRIES], last[EF_MAX_ENTRIES];
    char why[512];
    const char *name;
    const char *mine = NULL;
    for (size_t e = 0; e < n; e++) {
        s_host_t *h = ef_config_section_entry (self, "hosts", e, &name);
        if (!h->address || !*h->address) {
            snprintf (err, errlen,
                      "hosts.%s.address: required (what {host} in an "
                      "endpoint becomes)",
                      name);
            return -1;
        }
        if (!h->run || !*h->run) {
            snprintf (err, errlen, "hosts.%s.run: required", name);
            return -1;
        }
        if (s_parse_run (self, h->run, first, last, why, sizeof why) != 0) {
            snprintf (err, errlen, "hosts.%s.run: %s", name, why);
            return -1;
        }
        if (self->host && strcmp (self->host, name) == 0)
            mine = h->run;
        for (size_t i = 0; i < self->n_actors; i++) {
            s_actor_cfg_t *a = &self->actors[i];
            if (first[i] == -2)
                continue;
            int hi = last[i] < 0 ? a->instances - 1 : last[i];
            if (hi >= a->instances) {
                snprintf (err, errlen,
                          "hosts.%s.run: %s:%d-%d, but actors.%s.instances "
                          "is %d",
                          name, a->def->name, first[i], hi, a->def->name,
                          a->instances);
                return -1;
            }
            for (int k = first[i]; k <= hi; k++) {
                if (a->host_of[k] >= 0) {
                    const char *other;
                    ef_config_section_entry (self, "hosts",
                                             (size_t) a->host_of[k], &other);
                    snprintf (err, errlen,
                              "hosts.%s.run: %s[%d] runs on host %s already",
                              name, a->def->name, k, other);
                    return -1;
                }
                a->host_of[k] = (int16_t) e;
            }
        }
    }
    for (size_t i = 0; i < self->n_actors; i++)
        for (int k = 0; k < self->actors[i].instances; k++)
            if (self->actors[i].host_of[k] < 0
                && s_has_ports (self->actors[i].def)) {
                snprintf (err, errlen,
                          "hosts: no host runs %s[%d]: every instance runs "
                          "on exactly one host",
                          self->actors[i].def->name, k);
                return -1;
            }
    if (self->host && !mine) {
        snprintf (err, errlen,
                  "host: '%s' is not an entry of hosts:", self->host);
        return -1;
    }
    if (mine && !self->run_given && s_set_run (self, mine, why, sizeof why))
        return -1;
    self->placed = true;
    return 0;
}

/* Checks each actor's instance range in `run` against its instance
   count. Returns 0, or -1 with err. */
static int
s_check_ranges (const ef_config_t *self, char *err, size_t errlen)
{
    for (size_t i = 0; i < self->n_actors; i++) {
        const s_actor_cfg_t *a = &self->actors[i];
        if (!self->run_all && a->runs_here && a->last >= a->instances) {
            snprintf (err, errlen,
                      "run: %s:%d-%d, but actors.%s.instances is %d (the "
                      "same count on every host)",
                      a->def->name, a->first, a->last, a->def->name,
                      a->instances);
            return -1;
        }
    }
    return 0;
}

/* True when every instance of link's consumer runs on a host with a key
   (hosts.NAME.key): a connecting end then has the server key of each. */
static bool
s_host_keys (const ef_config_t *self, const char *link)
{
    const ef_actor_def_t *def = ef_config_link_consumer (self, link, NULL);
    const s_actor_cfg_t *a = def ? s_actor (self, def->name) : NULL;
    if (!self->placed || !a)
        return false;
    for (int k = 0; k < a->instances; k++) {
        const s_host_t *h = s_consumer_host (self, link, k, NULL);
        if (!h || !h->key)
            return false;
    }
    return true;
}

/* A producer that is not per-instance sends on one socket to every
   instance of the consumer, and one socket has one server key: refuses
   consumer instances of link on hosts with different keys. Returns 0 or
   -1 with err. */
static int
s_link_mixed_keys (const ef_config_t *self, const char *link, char *err,
                   size_t errlen)
{
    const ef_port_def_t *in = NULL;
    const ef_actor_def_t *def = ef_config_link_consumer (self, link, &in);
    const s_actor_cfg_t *a = def ? s_actor (self, def->name) : NULL;
    if (!a || !self->placed || (in && in->per_instance))
        return 0;
    const s_host_t *h0 = s_consumer_host (self, link, 0, NULL);
    for (int k = 1; k < a->instances; k++) {
        const s_host_t *h = s_consumer_host (self, link, k, NULL);
        if (h != h0 && h0 && h
            && strcmp (h0->key ? h0->key : "", h->key ? h->key : "") != 0) {
            snprintf (err, errlen,
                      "links.%s: the instances of %s run on hosts with "
                      "different keys; run them on one host",
                      link, def->name);
            return -1;
        }
    }
    return 0;
}

/* Runs the actors' and the sections' whole-entry checks. */
static int
s_validate_entries (const ef_config_t *self, char *err, size_t errlen)
{
    char why[512];
    for (size_t i = 0; i < self->n_actors; i++) {
        const s_actor_cfg_t *a = &self->actors[i];
        if (a->def->check && ef_config_runs_here (self, a->def->name)
            && a->def->check (a->options, why, sizeof why) != 0) {
            snprintf (err, errlen, "actors.%s.%s", a->def->name, why);
            return -1;
        }
    }
    for (size_t i = 0; i < self->n_sections; i++) {
        const s_section_t *sec = self->sections[i];
        for (size_t e = 0; sec->check && e < sec->n_entries; e++)
            if (sec->check (sec->entries[e].name, sec->entries[e].options, why,
                            sizeof why)
                != 0) {
                snprintf (err, errlen, "%s.%s.%s", sec->name,
                          sec->entries[e].name, why);
                return -1;
            }
    }
    return 0;
}

/* True when the host of a tcp:// endpoint is a loopback address
   (127.0.0.0/8, ::1, localhost, the interface lo); "*", other names and
   addresses are not. A connect endpoint's "source;" part is skipped. */
static bool
s_tcp_loopback (const char *endpoint)
{
    const char *host = endpoint + 6; /* past "tcp://" */
    const char *semi = strchr (host, ';');
    if (semi)
        host = semi + 1;
    char name[256], port[16];
    if (ef_address_split (host, name, sizeof name, port, sizeof port) != 0)
        return false; /* not HOST:PORT: nothing to call loopback */
    if (strcmp (name, "localhost") == 0 || strcmp (name, "lo") == 0)
        return true;
    struct in_addr v4;
    struct in6_addr v6;
    if (inet_pton (AF_INET, name, &v4) == 1)
        return (ntohl (v4.s_addr) >> 24) == 127;
    return inet_pton (AF_INET6, name, &v6) == 1
           && memcmp (&v6, &in6addr_loopback, sizeof v6) == 0;
}

/* Whether this process binds (an IN port reads it) and connects (an OUT
   port writes it) link. */
static void
s_link_ends_here (const ef_config_t *self, const char *link, bool *binds,
                  bool *connects)
{
    *binds = *connects = false;
    const s_link_cfg_t *l = s_link (self, link);
    for (size_t a = 0; l && a < self->n_actors; a++) {
        if (!ef_config_runs_here (self, self->actors[a].def->name))
            continue;
        *binds = *binds || s_joins (self, l, a, true);
        *connects = *connects || s_joins (self, l, a, false);
    }
}

/* The rules for tcp links, from the configuration alone (key files are
   read later, by ef_config_load_keys): an end this process opens off
   loopback needs CURVE keys unless the link says insecure, and a key
   needs what goes with it. Returns 0, or -1 with err naming the key. */
static int
s_validate_security (const ef_config_t *self, char *err, size_t errlen)
{
    for (size_t i = 0; i < self->n_links; i++) {
        const s_link_cfg_t *l = &self->links[i];
        bool binds, connects;
        s_link_ends_here (self, l->name, &binds, &connects);
        const char *bind_ep = l->bind ? l->bind : l->endpoint;
        bool tcp_bind = binds && bind_ep && strncmp (bind_ep, "tcp://", 6) == 0;
        bool tcp_conn =
            connects && l->endpoint && strncmp (l->endpoint, "tcp://", 6) == 0;
        bool host_keys = s_host_keys (self, l->name);
        if ((l->server_key || host_keys) && tcp_conn && !l->insecure
            && !self->curve_key) {
            snprintf (err, errlen,
                      "links.%s%s: needs curve.key, this process's "
                      "own key pair (embedflow keygen)",
                      l->name,
                      l->server_key ? ".server_key"
                                    : ": the server keys of hosts.*.key");
            return -1;
        }
        if (tcp_bind && !l->insecure && self->curve_key
            && !self->curve_clients) {
            snprintf (err, errlen,
                      "curve.clients: needed to bind links.%s with CURVE: "
                      "the directory of the public keys allowed to connect",
                      l->name);
            return -1;
        }
        if (tcp_bind && !l->insecure && !self->curve_key
            && !s_tcp_loopback (bind_ep)) {
            snprintf (err, errlen,
                      "links.%s: binding %s, which is not loopback, needs "
                      "CURVE keys (curve.key and curve.clients; make them "
                      "with embedflow keygen) or insecure: true",
                      l->name, bind_ep);
            return -1;
        }
        /* Connecting to a link this process binds itself, it knows the
           server's key: its own. */
        bool own = binds && tcp_bind && self->curve_key;
        if (tcp_conn && !l->insecure && !l->server_key && !own && !host_keys
            && !s_tcp_loopback (l->endpoint)) {
            snprintf (err, errlen,
                      "links.%s: connecting to %s, which is not loopback, "
                      "needs CURVE keys (links.%s.server_key, the public key "
                      "of the host that binds it, and curve.key) or "
                      "insecure: true",
                      l->name, l->endpoint, l->name);
            return -1;
        }
    }
    return 0;
}

/* Checks the graph: each link's `to` is an IN port and its `from` OUT
   ports of the same message type, all of them real; no IN port is read
   by two links; every IN port has a link (a producer) and every OUT
   port joins one. Returns 0, or -1 with err naming the key. */
static int
s_validate_topology (const ef_config_t *self, char *err, size_t errlen)
{
    char why[512];
    size_t a, len;
    const ef_port_def_t *in, *out;
    for (size_t i = 0; i < self->n_links; i++) {
        const s_link_cfg_t *l = &self->links[i];
        if (!l->to) {
            snprintf (err, errlen,
                      "links.%s.to: not set: the IN port that reads the "
                      "link, ACTOR.PORT",
                      l->name);
            return -1;
        }
        if (s_port_ref (self, l->to, strlen (l->to), &a, &in, why, sizeof why)
            != 0) {
            snprintf (err, errlen, "links.%s.to: %s", l->name, why);
            return -1;
        }
        if (in->dir != EF_PORT_IN) {
            snprintf (err, errlen,
                      "links.%s.to: %s is an OUT port; a link is read by "
                      "an IN port",
                      l->name, l->to);
            return -1;
        }
        for (size_t j = 0; j < i; j++)
            if (self->links[j].to && strcmp (self->links[j].to, l->to) == 0) {
                snprintf (err, errlen,
                          "links.%s.to: %s already reads links.%s (an IN "
                          "port reads one link; list several producers in "
                          "one link's from)",
                          l->name, l->to, self->links[j].name);
                return -1;
            }
        if (!l->from) {
            snprintf (err, errlen,
                      "links.%s.from: not set: %s has no producer (the OUT "
                      "ports that write the link, ACTOR.PORT, ...)",
                      l->name, l->to);
            return -1;
        }
        for (const char *r, *at = l->from; (r = s_next_ref (&at, &len));) {
            if (s_port_ref (self, r, len, &a, &out, why, sizeof why) != 0) {
                snprintf (err, errlen, "links.%s.from: %s", l->name, why);
                return -1;
            }
            if (out->dir != EF_PORT_OUT) {
                snprintf (err, errlen,
                          "links.%s.from: %.*s is an IN port; a link is "
                          "written by OUT ports",
                          l->name, (int) len, r);
                return -1;
            }
            if (strcmp (out->type ? out->type : "", in->type ? in->type : "")
                != 0) {
                snprintf (err, errlen,
                          "links.%s.from: %.*s carries %s, but %s (links.%s."
                          "to) takes %s",
                          l->name, (int) len, r, out->type ? out->type : "?",
                          l->to, l->name, in->type ? in->type : "?");
                return -1;
            }
        }
    }
    const char *any[1];
    for (size_t i = 0; i < self->n_actors; i++) {
        const ef_actor_def_t *def = self->actors[i].def;
        for (const ef_port_def_t *p = def->ports; p && p->name; p++) {
            if (ef_config_port_links (self, def->name, p->name, any, 1) > 0)
                continue;
            if (p->dir == EF_PORT_IN)
                snprintf (err, errlen,
                          "links: %s.%s has no producer: no link's to names "
                          "it (links.NAME.to: %s.%s)",
                          def->name, p->name, def->name, p->name);
            else
                snprintf (err, errlen,
                          "links: %s.%s joins no link: no link's from names "
                          "it (links.NAME.from: %s.%s)",
                          def->name, p->name, def->name, p->name);
            return -1;
        }
    }
    return 0;
}

size_t
ef_config_drain_order (const ef_config_t *self, size_t *order)
{
    /* Kahn's algorithm over actor -> actor edges of the links, leaving
       out the links into sources (replies: acks); among the actors whose
       feeders are all placed, the first registered goes first, and a
       cycle left is broken the same way. */
    size_t n = self->n_actors, done = 0;
    bool *placed = calloc (n ? n : 1, sizeof *placed);
    if (!placed) {
        for (size_t i = 0; i < n; i++)
            order[i] = i;
        return n;
    }
    while (done < n) {
        size_t pick = n;
        for (size_t b = 0; b < n && pick == n; b++) {
            if (placed[b])
                continue;
            bool fed = false;
            if (!(self->actors[b].def->flags & EF_ACTOR_SOURCE))
                for (size_t i = 0; i < self->n_links && !fed; i++) {
                    const s_link_cfg_t *l = &self->links[i];
                    if (!s_joins (self, l, b, true))
                        continue;
                    for (size_t a = 0; a < n && !fed; a++)
                        fed =
                            a != b && !placed[a] && s_joins (self, l, a, false);
                }
            if (!fed)
                pick = b;
        }
        if (pick == n) /* a cycle: the first registered of it */
            for (size_t b = 0; b < n && pick == n; b++)
                if (!placed[b])
                    pick = b;
        placed[pick] = true;
        order[done++] = pick;
    }
    free (placed);
    return n;
}

const ef_actor_def_t *
ef_config_actor_at (const ef_config_t *self, size_t i)
{
    return i < self->n_actors ? self->actors[i].def : NULL;
}

size_t
ef_config_actor_count (const ef_config_t *self)
{
    return self->n_actors;
}

int
ef_config_validate (ef_config_t *self, char *err, size_t errlen)
{
    /* the graph first: the checks after it follow its links */
    if (s_validate_topology (self, err, errlen) != 0)
        return -1;
    if (s_resolve_hosts (self, err, errlen) != 0
        || s_check_ranges (self, err, errlen) != 0)
        return -1;
    if (s_validate_entries (self, err, errlen) != 0)
        return -1;
    if (s_validate_security (self, err, errlen) != 0)
        return -1;
    for (size_t i = 0; i < self->n_links; i++) {
        const s_link_cfg_t *l = &self->links[i];
        const char *name = l->name;
        bool inproc =
            !l->endpoint || strncmp (l->endpoint, "inproc://", 9) == 0;
        if (s_link_mixed_keys (self, name, err, errlen) != 0)
            return -1;
        for (size_t a = 0; inproc && a < self->n_actors; a++)
            if ((s_joins (self, l, a, true) || s_joins (self, l, a, false))
                && s_partly_here (self, &self->actors[a])) {
                snprintf (err, errlen,
                          "links.%s: only some instances of %s run "
                          "here, so this link needs a tcp:// endpoint",
                          name, self->actors[a].def->name);
                return -1;
            }
        if (!inproc && !self->run_all)
            continue;
        /* An inproc link only works when both ends run in this process. */
        for (size_t a = 0; inproc && a < self->n_actors; a++) {
            if (ef_config_runs_here (self, self->actors[a].def->name))
                continue;
            for (int side = 0; side < 2; side++) {
                if (!s_joins (self, l, a, side))
                    continue;
                bool peer_here = false;
                for (size_t b = 0; b < self->n_actors; b++)
                    peer_here = peer_here
                                || (s_joins (self, l, b, !side)
                                    && ef_config_runs_here (
                                        self, self->actors[b].def->name));
                if (peer_here) {
                    snprintf (err, errlen,
                              "links.%s: %s runs in another process, so "
                              "this link needs a tcp:// endpoint",
                              name, self->actors[a].def->name);
                    return -1;
                }
            }
        }
    }
    return 0;
}

/* Instances of a on host e: how many, the first and the last. */
static int
s_on_host (const s_actor_cfg_t *a, int e, int *lo, int *hi)
{
    int n = 0;
    for (int k = 0; k < a->instances; k++)
        if (a->host_of[k] == e) {
            if (n++ == 0)
                *lo = k;
            *hi = k;
        }
    return n;
}

/* The topology with a cluster per entry of hosts: (see
   ef_config_print_dot). */
static void
s_print_dot_hosts (const ef_config_t *self, FILE *out)
{
    size_t nh = ef_config_section_size (self, "hosts");
    for (size_t e = 0; e < nh; e++) {
        const char *name;
        const s_host_t *h = ef_config_section_entry (self, "hosts", e, &name);
        bool mine = self->host && strcmp (self->host, name) == 0;
        fprintf (out,
                 "  subgraph \"cluster_%zu\" {\n    label=\"host %s (%s)%s\";"
                 "\n",
                 e, name, h->address, mine ? ": this process" : "");
        for (size_t i = 0; i < self->n_actors; i++) {
            const s_actor_cfg_t *a = &self->actors[i];
            int lo = 0, hi = 0, n = s_on_host (a, (int) e, &lo, &hi);
            if (n == 0)
                continue;
            char what[64];
            if (n == a->instances)
                snprintf (what, sizeof what, "x%d", n);
            else
                snprintf (what, sizeof what, "[%d-%d] of %d", lo, hi,
                          a->instances);
            fprintf (out, "    \"%s@%s\" [label=\"%s %s\"];\n", a->def->name,
                     name, a->def->name, what);
        }
        fprintf (out, "  }\n");
    }
    for (size_t li = 0; li < self->n_links; li++)
        for (size_t i = 0; i < self->n_actors; i++) {
            const s_link_cfg_t *p = &self->links[li];
            if (!s_joins (self, p, i, false))
                continue;
            const ef_port_def_t *in = NULL;
            const ef_actor_def_t *to =
                ef_config_link_consumer (self, p->name, &in);
            const s_actor_cfg_t *c = to ? s_actor (self, to->name) : NULL;
            for (size_t ep = 0; c && ep < nh; ep++) {
                int lo = 0, hi = 0;
                const char *pname = "";
                ef_config_section_entry (self, "hosts", ep, &pname);
                if (!s_on_host (&self->actors[i], (int) ep, &lo, &hi))
                    continue;
                for (size_t ec = 0; ec < nh; ec++) {
                    const char *cname = "";
                    ef_config_section_entry (self, "hosts", ec, &cname);
                    if (!s_on_host (c, (int) ec, &lo, &hi))
                        continue;
                    char addr[256] = "";
                    ef_config_link_endpoint (
                        self, p->name, false,
                        (in && in->per_instance) || c->instances > 1 ? lo : -1,
                        addr, sizeof addr);
                    fprintf (out,
                             "  \"%s@%s\" -> \"%s@%s\" "
                             "[label=\"%s\\n%s%s\"];\n",
                             self->actors[i].def->name, pname, to->name, cname,
                             p->name, addr,
                             in && in->per_instance && hi > lo ? " +i" : "");
                }
            }
        }
}

void
ef_config_print_dot (const ef_config_t *self, FILE *out)
{
    fprintf (out, "digraph embedflow {\n  rankdir=LR;\n  node [shape=box];\n");
    if (self->placed && ef_config_section_size (self, "hosts") > 0) {
        s_print_dot_hosts (self, out);
        fprintf (out, "}\n");
        return;
    }
    for (size_t i = 0; i < self->n_actors; i++) {
        const s_actor_cfg_t *a = &self->actors[i];
        char part[64] = "";
        if (s_partly_here (self, a))
            snprintf (part, sizeof part, "\\n([%d-%d] here)", a->first,
                      a->last < 0 ? a->instances - 1 : a->last);
        fprintf (
            out, "  \"%s\" [label=\"%s x%d%s%s\"%s];\n", a->def->name,
            a->def->name, a->instances,
            ef_config_runs_here (self, a->def->name) ? "" : "\\n(remote)", part,
            ef_config_runs_here (self, a->def->name) ? "" : " style=dashed");
    }
    for (size_t li = 0; li < self->n_links; li++)
        for (size_t i = 0; i < self->n_actors; i++) {
            const s_link_cfg_t *l = &self->links[li];
            if (!s_joins (self, l, i, false))
                continue;
            const ef_port_def_t *in = NULL;
            const ef_actor_def_t *to =
                ef_config_link_consumer (self, l->name, &in);
            char ep[256] = "";
            ef_config_link_endpoint (self, l->name, false,
                                     in && in->per_instance ? 0 : -1, ep,
                                     sizeof ep);
            if (to)
                fprintf (out, "  \"%s\" -> \"%s\" [label=\"%s\\n%s\"];\n",
                         self->actors[i].def->name, to->name, l->name, ep);
        }
    fprintf (out, "}\n");
}

/* --- printing the configuration ---------------------------------------- */

/* Writes text as a YAML double-quoted scalar: '"' and '\' escaped,
   control characters and bytes that are not UTF-8 as \xNN, so any value
   prints as one valid line; "${" as "$${", so that loading it back does
   not replace anything. */
static void
s_print_quoted (FILE *out, const char *text)
{
    fputc ('"', out);
    const unsigned char *p = (const unsigned char *) text;
    size_t left = strlen (text);
    while (left > 0) {
        size_t n = ef_utf8_seq (p, left);
        if (*p == '"' || *p == '\\')
            fprintf (out, "\\%c", *p);
        else if (*p == '$' && p[1] == '{')
            fputs ("$$", out);
        else if (n == 0 || *p < 0x20 || *p == 0x7f)
            fprintf (out, "\\x%02x", *p);
        else
            fwrite (p, 1, n, out);
        n = n ? n : 1;
        p += n;
        left -= n;
    }
    fputc ('"', out);
}

/* Writes v in the largest unit that divides it exactly, as the loader
   reads it back: sizes in G, M, k or bytes, durations in h, m, s or ms. */
static void
s_print_scaled (FILE *out, int64_t v, ef_option_type_t type)
{
    static const char *const size_units[] = {"G", "M", "k"};
    static const int64_t size_scales[] = {1 << 30, 1 << 20, 1 << 10};
    static const char *const ms_units[] = {"h", "m", "s", "ms"};
    static const int64_t ms_scales[] = {3600000, 60000, 1000, 1};
    bool size = type == EF_OPT_SIZE;
    size_t n = size ? 3 : 4;
    for (size_t i = 0; v != 0 && i < n; i++) {
        int64_t scale = size ? size_scales[i] : ms_scales[i];
        if (v % scale == 0) {
            fprintf (out, "%" PRId64 "%s", v / scale,
                     size ? size_units[i] : ms_units[i]);
            return;
        }
    }
    fprintf (out, "%" PRId64, v);
}

/* Writes one option of obj as "KEY: VALUE" at indent; an unset string
   as a comment, since YAML's null would be read back as the text "~".
   A secret is "***", or what show makes of it. path is the key's
   dotted path, for show. */
static void
s_print_option (FILE *out, int indent, const ef_option_t *o, const void *obj,
                const char *path, ef_config_show_fn *show)
{
    const char *field = (const char *) obj + o->offset;
    if (o->type == EF_OPT_STRING || o->type == EF_OPT_SECRET) {
        const char *s;
        memcpy (&s, field, sizeof s);
        if (!s) {
            fprintf (out, "%*s# %s: (not set)\n", indent, "", o->key);
            return;
        }
        fprintf (out, "%*s%s: ", indent, "", o->key);
        char shown[1024];
        if (o->type == EF_OPT_SECRET
            && (!show || show (path, s, shown, sizeof shown) != 0))
            snprintf (shown, sizeof shown, "***");
        s_print_quoted (out, o->type == EF_OPT_SECRET ? shown : s);
        fputc ('\n', out);
        return;
    }
    fprintf (out, "%*s%s: ", indent, "", o->key);
    if (o->type == EF_OPT_BOOL) {
        bool b;
        memcpy (&b, field, sizeof b);
        fprintf (out, "%s\n", b ? "true" : "false");
        return;
    }
    int64_t v;
    memcpy (&v, field, sizeof v);
    if (o->type == EF_OPT_INT)
        fprintf (out, "%" PRId64, v);
    else
        s_print_scaled (out, v, o->type);
    fputc ('\n', out);
}

/* Writes every option of table in obj at indent; prefix + key is each
   one's dotted path. */
static void
s_print_table (FILE *out, int indent, const ef_option_t *table, const void *obj,
               const char *prefix, ef_config_show_fn *show)
{
    for (const ef_option_t *o = table; o && o->key; o++) {
        char path[256];
        snprintf (path, sizeof path, "%s%s", prefix, o->key);
        s_print_option (out, indent, o, obj, path, show);
    }
}

/* Writes an optional path-like string key of the runtime's own. */
static void
s_print_string (FILE *out, int indent, const char *key, const char *value,
                const char *unset)
{
    if (!value) {
        fprintf (out, "%*s# %s: (not set%s%s)\n", indent, "", key,
                 unset ? ": " : "", unset ? unset : "");
        return;
    }
    fprintf (out, "%*s%s: ", indent, "", key);
    s_print_quoted (out, value);
    fputc ('\n', out);
}

void
ef_config_print (const ef_config_t *self, FILE *out, ef_config_show_fn *show)
{
    s_print_table (out, 0, self->globals_table, self->globals, "", show);
    if (self->n_plugins) {
        fprintf (out, "plugins:\n");
        for (size_t i = 0; i < self->n_plugins; i++) {
            fprintf (out, "  - ");
            s_print_quoted (out, self->plugins[i]);
            fputc ('\n', out);
        }
    }
    fprintf (out, "run: ");
    if (self->run_all)
        fprintf (out, "all\n");
    else {
        const char *sep = "[";
        for (size_t i = 0; i < self->n_actors; i++)
            if (self->actors[i].runs_here) {
                fprintf (out, "%s%s", sep, self->actors[i].def->name);
                sep = ", ";
            }
        fprintf (out, "%s]\n", *sep == '[' ? "[" : "");
    }
    fprintf (out, "drain_idle: ");
    s_print_scaled (out, self->drain_idle_ms, EF_OPT_MS);
    fprintf (out, "\ndrain_timeout: ");
    s_print_scaled (out, self->drain_timeout_ms, EF_OPT_MS);
    fprintf (out, "\nactors:\n");
    for (size_t i = 0; i < self->n_actors; i++) {
        const s_actor_cfg_t *a = &self->actors[i];
        char prefix[128];
        snprintf (prefix, sizeof prefix, "actors.%s.", a->def->name);
        fprintf (out, "  %s:%s\n    instances: %d\n", a->def->name,
                 ef_config_runs_here (self, a->def->name)
                     ? ""
                     : "  # not in this process",
                 a->instances);
        fprintf (out, "    restart: %s\n",
                 (a->restart < 0 ? a->def->restart : a->restart) ? "always"
                                                                 : "never");
        s_print_table (out, 4, s_restart_options, a, prefix, show);
        s_print_table (out, 4, a->def->options, a->options, prefix, show);
    }
    fprintf (out, "links:\n");
    for (size_t i = 0; i < self->n_links; i++) {
        const s_link_cfg_t *l = &self->links[i];
        const ef_port_def_t *in = NULL;
        ef_config_link_consumer (self, l->name, &in);
        char ep[256];
        fprintf (out, "  %s:\n", l->name);
        s_print_string (out, 4, "from", l->from, NULL);
        s_print_string (out, 4, "to", l->to, NULL);
        if (ef_config_link_endpoint (self, l->name, false, -1, ep, sizeof ep)
            == 0)
            s_print_string (out, 4, "endpoint", ep, NULL);
        s_print_string (out, 4, "bind", l->bind, "the endpoint");
        fprintf (out, "    hwm: %d\n",
                 ef_config_link_hwm (self, l->name, in ? in->hwm : 0));
        fprintf (out, "    max_message: ");
        s_print_scaled (out, ef_config_link_max_message (self, l->name),
                        EF_OPT_SIZE);
        fprintf (out, "\n    insecure: %s\n", l->insecure ? "true" : "false");
        s_print_string (out, 4, "server_key", l->server_key, NULL);
    }
    /* a mapping of comments alone would be read back as null */
    fprintf (out, "curve:%s\n",
             self->curve_key || self->curve_clients ? "" : " {}");
    s_print_string (out, 2, "key", self->curve_key, NULL);
    s_print_string (out, 2, "clients", self->curve_clients, NULL);
    for (size_t i = 0; i < self->n_sections; i++) {
        const s_section_t *sec = self->sections[i];
        fprintf (out, "%s:%s\n", sec->name, sec->n_entries ? "" : " {}");
        for (size_t e = 0; e < sec->n_entries; e++) {
            char prefix[160];
            snprintf (prefix, sizeof prefix, "%s.%s.", sec->name,
                      sec->entries[e].name);
            fprintf (out, "  %s:\n", sec->entries[e].name);
            s_print_table (out, 4, sec->table, sec->entries[e].options, prefix,
                           show);
        }
    }
}

/* --- CURVE keys and link limits ---------------------------------------- */

/* The value of "NAME = "VALUE"" on a line of text (ZPL, as zcert writes
   it) into out (41 bytes): true when found and 40 characters long. */
static bool
s_zpl_key (const char *text, const char *name, char out[41])
{
    size_t n = strlen (name);
    for (const char *line = text; line && *line;) {
        const char *p = line + strspn (line, " \t");
        if (strncmp (p, name, n) == 0) {
            p += n;
            p += strspn (p, " \t");
            if (*p == '=') {
                p++;
                p += strspn (p, " \t");
                if (*p == '"')
                    p++;
                size_t len = strcspn (p, "\"\r\n \t");
                if (len != 40)
                    return false;
                memcpy (out, p, 40);
                out[40] = 0;
                return true;
            }
        }
        line = strchr (line, '\n');
        line = line ? line + 1 : NULL;
    }
    return false;
}

/* Reads a zcert file into a new cert, or says why not: the file cannot
   be opened, or holds no CURVE key. NULL with why set. Not zcert_load:
   it reads PATH_secret before PATH (a public key file named as such
   would silently yield the pair), and czmq's parser leaks and prints on
   malformed input, which an operator's typo must not cause. */
static zcert_t *
s_load_cert (const char *path, char *why, size_t len)
{
    FILE *f = fopen (path, "r");
    if (!f) {
        snprintf (why, len, "cannot read %s: %s", path, strerror (errno));
        return NULL;
    }
    char text[16384];
    size_t got = fread (text, 1, sizeof text - 1, f);
    bool whole = feof (f);
    fclose (f);
    text[got] = 0;
    char pub[41], sec[41];
    uint8_t pk[32], sk[32] = {0};
    bool has_sec = s_zpl_key (text, "secret-key", sec);
    if (whole && s_zpl_key (text, "public-key", pub) && zmq_z85_decode (pk, pub)
        && (!has_sec || zmq_z85_decode (sk, sec)))
        return zcert_new_from (pk, sk);
    snprintf (why, len, "%s is not a key file (make one with embedflow keygen)",
              path);
    return NULL;
}

/* True when cert carries a secret key (a public file has none). */
static bool
s_has_secret (zcert_t *cert)
{
    static const uint8_t zero[32];
    return memcmp (zcert_secret_key (cert), zero, 32) != 0;
}

/* Checks the allow-list directory: readable, and every file in it (dot
   files aside) a key file, at least one. Returns 0 or -1 with why. */
static int
s_check_clients (const char *dir, char *why, size_t len)
{
    DIR *d = opendir (dir);
    if (!d) {
        snprintf (why, len, "cannot read the directory %s: %s", dir,
                  strerror (errno));
        return -1;
    }
    int keys = 0, rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir (d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        struct stat st;
        snprintf (path, sizeof path, "%s/%s", dir, e->d_name);
        if (stat (path, &st) != 0 || !S_ISREG (st.st_mode))
            continue;
        zcert_t *cert = s_load_cert (path, why, len);
        if (!cert)
            rc = -1;
        keys++;
        zcert_destroy (&cert);
    }
    closedir (d);
    if (rc == 0 && keys == 0) {
        snprintf (why, len,
                  "%s holds no public key: copy the .key file of every "
                  "host that connects here into it",
                  dir);
        rc = -1;
    }
    return rc;
}

/* Reads a public key given as a file or as 40 characters of Z85 into
   out (41 bytes). Returns 0, or -1 with why. */
static int
s_public_key (const char *given, char out[41], char *why, size_t len)
{
    uint8_t pk[32];
    struct stat st;
    if (strlen (given) == 40 && stat (given, &st) != 0
        && zmq_z85_decode (pk, given)) {
        memcpy (out, given, 41);
        return 0;
    }
    zcert_t *cert = s_load_cert (given, why, len);
    if (!cert)
        return -1;
    snprintf (out, 41, "%s", zcert_public_txt (cert));
    zcert_destroy (&cert);
    return 0;
}

int
ef_config_load_keys (ef_config_t *self, char *err, size_t errlen)
{
    char why[1024];
    bool any = self->curve_key != NULL;
    for (size_t i = 0; i < self->n_links; i++)
        any = any || self->links[i].server_key;
    s_host_t *h;
    const char *name;
    for (size_t i = 0; (h = ef_config_section_entry (self, "hosts", i, &name));
         i++)
        any = any || h->key;
    if (any && !zsys_has_curve ()) {
        snprintf (err, errlen,
                  "curve.key: this libzmq was built without CURVE support");
        return -1;
    }
    zcert_destroy (&self->cert);
    if (self->curve_key) {
        self->cert = s_load_cert (self->curve_key, why, sizeof why);
        if (self->cert && !s_has_secret (self->cert)) {
            snprintf (why, sizeof why,
                      "%s holds only a public key: give the secret file "
                      "(NAME.key_secret) of this host's pair",
                      self->curve_key);
            zcert_destroy (&self->cert);
        }
        if (!self->cert) {
            snprintf (err, errlen, "curve.key: %s", why);
            return -1;
        }
    }
    if (self->curve_clients
        && s_check_clients (self->curve_clients, why, sizeof why) != 0) {
        snprintf (err, errlen, "curve.clients: %s", why);
        return -1;
    }
    for (size_t i = 0; i < self->n_links; i++) {
        s_link_cfg_t *l = &self->links[i];
        l->server_txt[0] = 0;
        if (l->server_key
            && s_public_key (l->server_key, l->server_txt, why, sizeof why)) {
            snprintf (err, errlen, "links.%s.server_key: %s", l->name, why);
            return -1;
        }
    }
    for (size_t i = 0; (h = ef_config_section_entry (self, "hosts", i, &name));
         i++) {
        h->key_txt[0] = 0;
        if (h->key && s_public_key (h->key, h->key_txt, why, sizeof why)) {
            snprintf (err, errlen, "hosts.%s.key: %s", name, why);
            return -1;
        }
    }
    return 0;
}

zcert_t *
ef_config_cert (const ef_config_t *self)
{
    return self->cert;
}

const char *
ef_config_curve_clients (const ef_config_t *self)
{
    return self->curve_clients;
}

const char *
ef_config_link_server_key (const ef_config_t *self, const char *link, int index)
{
    const s_link_cfg_t *l = s_link (self, link);
    if (l && l->server_txt[0])
        return l->server_txt;
    const s_host_t *h = s_consumer_host (self, link, index, NULL);
    if (h && h->key_txt[0])
        return h->key_txt;
    bool binds, connects;
    s_link_ends_here (self, link, &binds, &connects);
    const char *bind_ep = l ? (l->bind ? l->bind : l->endpoint) : NULL;
    if (binds && self->cert && bind_ep && strncmp (bind_ep, "tcp://", 6) == 0)
        return zcert_public_txt (self->cert);
    return NULL;
}

bool
ef_config_link_insecure (const ef_config_t *self, const char *link)
{
    const s_link_cfg_t *l = s_link (self, link);
    return l && l->insecure;
}

void
ef_config_link_set_default_max (ef_config_t *self, const char *link,
                                int64_t bytes)
{
    s_link_cfg_t *l = s_link (self, link);
    if (l)
        l->default_max = bytes;
}

int64_t
ef_config_link_peer_timeout (const ef_config_t *self, const char *link)
{
    const s_link_cfg_t *l = s_link (self, link);
    if (l && l->peer_timeout_set)
        return l->peer_timeout;
    return EF_PEER_TIMEOUT_DEFAULT_MS;
}

int64_t
ef_config_link_max_message (const ef_config_t *self, const char *link)
{
    const s_link_cfg_t *l = s_link (self, link);
    if (l && l->max_message > 0)
        return l->max_message;
    return l && l->default_max > 0 ? l->default_max : EF_LINK_MAX_DEFAULT;
}

int
ef_config_actor_option_int (const ef_config_t *self, const char *actor,
                            const char *key, int64_t *out)
{
    s_actor_cfg_t *a = s_actor (self, actor);
    const ef_option_t *o = a ? ef_options_find (a->def->options, key) : NULL;
    if (!o
        || (o->type != EF_OPT_INT && o->type != EF_OPT_SIZE
            && o->type != EF_OPT_MS))
        return -1;
    memcpy (out, (char *) a->options + o->offset, sizeof *out);
    return 0;
}

void
ef_config_warn_insecure (const ef_config_t *self)
{
    for (size_t i = 0; i < self->n_links; i++) {
        const s_link_cfg_t *l = &self->links[i];
        bool binds, connects;
        s_link_ends_here (self, l->name, &binds, &connects);
        const char *bind_ep = l->bind ? l->bind : l->endpoint;
        if (!l->insecure)
            continue;
        if (binds && bind_ep && strncmp (bind_ep, "tcp://", 6) == 0)
            ef_warn ("links.%s: insecure: binding %s without CURVE: anyone "
                     "who reaches it can send to this process",
                     l->name, bind_ep);
        if (connects && l->endpoint && strncmp (l->endpoint, "tcp://", 6) == 0)
            ef_warn ("links.%s: insecure: connecting to %s without CURVE: "
                     "the peer is not authenticated and the data is not "
                     "encrypted",
                     l->name, l->endpoint);
    }
}
