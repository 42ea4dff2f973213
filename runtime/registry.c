/*  registry.c — the actor definitions a binary knows, by name. */
#include "embedflow/runtime.h"

#include <stdlib.h>
#include <string.h>

#define EF_REGISTRY_MAX 64

struct ef_registry {
    const ef_actor_def_t *defs[EF_REGISTRY_MAX]; /* borrowed definitions */
    size_t size;                                 /* used slots */
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
    if (ef_registry_find (self, def->name) || self->size == EF_REGISTRY_MAX)
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
