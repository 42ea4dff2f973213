/*  registry.c — the built-in actors, one line each. Registration order is
    pipeline order: the runtime drains actors upstream first in this order. */
#include "pipeline/pipeline.h"

int
ef_register_builtin_actors (ef_registry_t *registry)
{
    const ef_actor_def_t *builtin[] = {
        &ef_grpc_receiver_actor,     /* push: UploadEmbeddings */
        &ef_scheduler_actor,         /* pull jobs on cron schedules */
        &ef_grpc_puller_actor,       /* pull: GetEmbeddings */
        &ef_splitter_actor,          /* validate, re-split, route */
        &ef_db_writer_actor,         /* one PostgreSQL connection each */
        &ef_dlq_actor,               /* rows that cannot be written */
        &ef_cache_invalidator_actor, /* CacheService.Invalidate */
    };
    for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++)
        if (ef_registry_add (registry, builtin[i]) != 0)
            return -1;
    return 0;
}
