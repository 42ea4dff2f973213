/*  The restart policy of a failed actor instance (runtime/restarts.c)
    and its keys: never, max_restarts within restart_window, the backoff
    before each restart, each actor's default. */
#include "ef_test.h"

#include "embedflow/runtime.h"
#include "pipeline/pipeline.h"
#include "runtime/internal.h"

#include <string.h>

EF_TEST (restarts_never)
{
    ef_restarts_t r = ef_restarts_make (false, 5, 60000);
    EF_CHECK (ef_restarts_failed (&r, 1000) == -1);
    EF_CHECK (ef_restarts_count (&r) == 1);
}

EF_TEST (restarts_max_within_window)
{
    /* 2 restarts allowed per second: the third failure within it stops */
    ef_restarts_t r = ef_restarts_make (true, 2, 1000);
    int64_t d1 = ef_restarts_failed (&r, 10000);
    int64_t d2 = ef_restarts_failed (&r, 10300);
    EF_CHECK (d1 >= 1 && d1 <= EF_RESTART_BASE_MS);
    EF_CHECK (d2 >= 1 && d2 <= 2 * EF_RESTART_BASE_MS);
    EF_CHECK (ef_restarts_failed (&r, 10900) == -1);
    EF_CHECK (ef_restarts_count (&r) == 3);

    /* failures older than the window no longer count */
    r = ef_restarts_make (true, 2, 1000);
    EF_CHECK (ef_restarts_failed (&r, 0) > 0);
    EF_CHECK (ef_restarts_failed (&r, 500) > 0);
    EF_CHECK (ef_restarts_failed (&r, 1200) > 0); /* the one at 0 expired */
    EF_CHECK (ef_restarts_count (&r) == 2);
    EF_CHECK (ef_restarts_failed (&r, 1400) == -1); /* 500, 1200, 1400 */

    /* max_restarts 0: restart always, but never twice... nor once */
    r = ef_restarts_make (true, 0, 1000);
    EF_CHECK (ef_restarts_failed (&r, 0) == -1);
    /* clamped to what the ring holds */
    r = ef_restarts_make (true, 100000, 1000);
    EF_CHECK (r.max_restarts == EF_RESTARTS_MAX);
}

EF_TEST (restarts_backoff_grows_and_resets)
{
    ef_restarts_t r = ef_restarts_make (true, EF_RESTARTS_MAX, 60000);
    int64_t ceiling = EF_RESTART_BASE_MS, now = 0;
    for (int i = 0; i < 12; i++) {
        int64_t d = ef_restarts_failed (&r, now);
        EF_CHECK (d >= 1 && d <= ceiling);
        ceiling =
            ceiling * 2 > EF_RESTART_CAP_MS ? EF_RESTART_CAP_MS : ceiling * 2;
        now += 10;
    }
    /* a quiet window: the next failure is restarted at once again */
    now += 60000;
    for (int i = 0; i < 50; i++) {
        ef_restarts_t copy = r;
        EF_CHECK (ef_restarts_failed (&copy, now) <= EF_RESTART_BASE_MS);
        EF_CHECK (ef_restarts_count (&copy) == 1);
        r.backoff.rng += 7919; /* another draw of the jitter */
    }
}

EF_TEST (restarts_config_keys)
{
    char err[512];
    ef_registry_t *reg = ef_registry_new ();
    ef_register_builtin_actors (reg);
    ef_config_t *c = ef_config_new (reg, ef_globals_options,
                                    sizeof (ef_globals_t), err, sizeof err);
    EF_REQUIRE (c);
    /* defaults: writers restart, the others stop the process */
    ef_restarts_t w = ef_config_restarts (c, "db-writer");
    EF_CHECK (w.restart && w.max_restarts == 5 && w.window_ms == 60000);
    EF_CHECK (!ef_config_restarts (c, "splitter").restart);
    EF_CHECK (
        ef_config_set (c, "actors.db-writer.restart", "never", err, sizeof err)
        == 0);
    EF_CHECK (!ef_config_restarts (c, "db-writer").restart);
    EF_CHECK (
        ef_config_set (c, "actors.splitter.restart", "always", err, sizeof err)
        == 0);
    EF_CHECK (ef_config_restarts (c, "splitter").restart);
    EF_CHECK (
        ef_config_set (c, "actors.db-writer.max_restarts", "2", err, sizeof err)
        == 0);
    EF_CHECK (ef_config_set (c, "actors.db-writer.restart_window", "5m", err,
                             sizeof err)
              == 0);
    w = ef_config_restarts (c, "db-writer");
    EF_CHECK (w.max_restarts == 2 && w.window_ms == 300000);
    /* bad values name the key and say why */
    EF_CHECK (ef_config_set (c, "actors.db-writer.restart", "sometimes", err,
                             sizeof err)
              == -1);
    EF_CHECK (strstr (err, "actors.db-writer.restart")
              && strstr (err, "always or never"));
    EF_CHECK (ef_config_set (c, "actors.db-writer.max_restarts", "2k", err,
                             sizeof err)
              == -1);
    EF_CHECK (strstr (err, "actors.db-writer.max_restarts") != NULL);
    EF_CHECK (ef_config_set (c, "actors.db-writer.max_restarts", "101", err,
                             sizeof err)
              == -1);
    EF_CHECK (ef_config_set (c, "actors.db-writer.restart_window", "0s", err,
                             sizeof err)
              == -1);
    EF_CHECK (strstr (err, "actors.db-writer.restart_window") != NULL);
    /* the values that failed left the good ones */
    w = ef_config_restarts (c, "db-writer");
    EF_CHECK (!w.restart && w.max_restarts == 2 && w.window_ms == 300000);
    ef_config_destroy (&c);
    ef_registry_destroy (&reg);
}
