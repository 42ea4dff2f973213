/*  fuzz_config.c — the configuration file (`--config FILE`).

    The bytes are the file. It is loaded as `embedflow run` loads it:
    every built-in actor registered, the jobs section declared, the file
    read, then the whole configuration validated and printed. A bad file
    must give an error naming what is wrong, never a crash or a leak. */
#include "fuzz.h"

#include <string.h>
#include <unistd.h>

#include "embedflow/log.h"
#include "pipeline/pipeline.h"
#include "embedflow/runtime.h"
#include "jobs/job.h"

static ef_registry_t *s_registry; /* the built-in actors, for every run */

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    ef_log_set_level (EF_LOG_ERROR);
    if (!s_registry) {
        s_registry = ef_registry_new ();
        EF_FUZZ_ASSERT (s_registry
                        && ef_register_builtin_actors (s_registry) == 0);
    }
    const char *path = ef_fuzz_file ("config.yaml", data, size);
    char err[1024] = "";
    ef_config_t *config = ef_config_new (
        s_registry, ef_globals_options, sizeof (ef_globals_t), err, sizeof err);
    EF_FUZZ_ASSERT (config != NULL);
    EF_FUZZ_ASSERT (ef_jobs_declare (config, err, sizeof err) == 0);
    err[0] = '\0';
    if (ef_config_load_file (config, path, err, sizeof err) == 0) {
        if (ef_config_validate (config, err, sizeof err) == 0) {
            FILE *sink = fopen ("/dev/null", "w");
            if (sink) {
                ef_config_print (config, sink, ef_globals_show_secret);
                ef_config_print_dot (config, sink);
                fclose (sink);
            }
        }
        else
            EF_FUZZ_ASSERT (err[0] != '\0');
    }
    else
        EF_FUZZ_ASSERT (err[0] != '\0');
    ef_config_destroy (&config);
    unlink (path);
    return 0;
}
