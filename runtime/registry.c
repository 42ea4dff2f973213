/*  registry.c — the actor definitions a binary knows, by name, the
    default topology that joins them, and out-of-tree actors loaded from
    shared objects. */
#include "embedflow/runtime.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EF_REGISTRY_MAX 64
#define EF_LINKS_MAX    64

typedef struct {
    const char *name; /* link name, borrowed */
    const char *from; /* comma list of ACTOR.PORT, borrowed */
    const char *to;   /* ACTOR.PORT, borrowed */
} s_link_t;

struct ef_registry {
    const ef_actor_def_t *defs[EF_REGISTRY_MAX]; /* borrowed definitions */
    size_t size;                                 /* used slots */
    s_link_t links[EF_LINKS_MAX];                /* default topology */
    size_t n_links;                              /* used slots */
};

ef_registry_t *
ef_registry_new (void)
{
    return calloc (1, sizeof (ef_registry_t));
}

void
ef_registry_destroy (ef_registry_t **self_p)
{
    if (self_p && *self_p) {
        free (*self_p);
        *self_p = NULL;
    }
}

int
ef_registry_add (ef_registry_t *self, const ef_actor_def_t *def)
{
    if (!def || !def->name || ef_registry_find (self, def->name)
        || self->size == EF_REGISTRY_MAX)
        return -1;
    self->defs[self->size++] = def;
    return 0;
}

const ef_actor_def_t *
ef_registry_find (const ef_registry_t *self, const char *name)
{
    for (size_t i = 0; i < self->size; i++)
        if (strcmp (self->defs[i]->name, name) == 0)
            return self->defs[i];
    return NULL;
}

size_t
ef_registry_size (const ef_registry_t *self)
{
    return self->size;
}

const ef_actor_def_t *
ef_registry_at (const ef_registry_t *self, size_t i)
{
    return i < self->size ? self->defs[i] : NULL;
}

int
ef_registry_add_link (ef_registry_t *self, const char *name, const char *from,
                      const char *to)
{
    if (!name || self->n_links == EF_LINKS_MAX)
        return -1;
    for (size_t i = 0; i < self->n_links; i++)
        if (strcmp (self->links[i].name, name) == 0)
            return -1;
    self->links[self->n_links++] = (s_link_t){name, from, to};
    return 0;
}

int
ef_registry_link_at (const ef_registry_t *self, size_t i, const char **name,
                     const char **from, const char **to)
{
    if (i >= self->n_links)
        return -1;
    *name = self->links[i].name;
    *from = self->links[i].from;
    *to = self->links[i].to;
    return 0;
}

int
ef_registry_load_plugin (ef_registry_t *self, const char *path, char *err,
                         size_t errlen)
{
    /* RTLD_NOW: a missing symbol is found here, naming the file, not
       later on an actor's thread. The handle is never closed: the
       registry and the running actors point into the object. */
    void *handle = dlopen (path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        snprintf (err, errlen, "cannot load %s: %s", path, dlerror ());
        return -1;
    }
    dlerror ();
    ef_plugin_register_fn *entry;
    *(void **) &entry = dlsym (handle, EF_PLUGIN_ENTRY);
    if (!entry) {
        const char *why = dlerror ();
        snprintf (err, errlen, "%s: no entry point %s: %s", path,
                  EF_PLUGIN_ENTRY, why ? why : "not exported");
        return -1;
    }
    size_t before = self->size;
    char why[512] = "";
    if (entry (self, why, sizeof why) != 0) {
        snprintf (err, errlen, "%s: %s failed: %s", path, EF_PLUGIN_ENTRY,
                  *why ? why : "(no reason given)");
        return -1;
    }
    if (self->size == before) {
        snprintf (err, errlen, "%s: %s registered no actor", path,
                  EF_PLUGIN_ENTRY);
        return -1;
    }
    return 0;
}
