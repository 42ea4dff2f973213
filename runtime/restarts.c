/*  restarts.c — when a failed actor instance is started again.

    A failure is kept for restart_window; the one that makes more than
    max_restarts kept failures is refused (the process stops), and so is
    every failure of an instance whose policy is never. The delay before a
    restart comes from the runtime's one backoff helper: it grows with the
    failures still in the window and starts over once the window has
    emptied, so an instance that failed once an hour is restarted at once
    every time while one failing in a loop waits longer each time.
*/
#include "internal.h"

#include <string.h>

ef_restarts_t
ef_restarts_make (bool restart, int max_restarts, int64_t window_ms)
{
    ef_restarts_t r;
    memset (&r, 0, sizeof r);
    r.restart = restart;
    r.max_restarts = max_restarts < 0                 ? 0
                     : max_restarts > EF_RESTARTS_MAX ? EF_RESTARTS_MAX
                                                      : max_restarts;
    r.window_ms = window_ms > 0 ? window_ms : 1;
    r.backoff = ef_backoff_make (EF_RESTART_BASE_MS, EF_RESTART_CAP_MS, -1);
    return r;
}

int64_t
ef_restarts_failed (ef_restarts_t *self, int64_t now_ms)
{
    int keep = 0;
    for (int i = 0; i < self->n; i++)
        if (now_ms - self->times[i] < self->window_ms)
            self->times[keep++] = self->times[i];
    self->n = keep;
    if (self->n == 0)
        ef_backoff_reset (&self->backoff);
    /* times holds max_restarts + 1 entries: the last one is the failure
       that is refused */
    self->times[self->n++] = now_ms;
    if (!self->restart || self->n > self->max_restarts)
        return -1;
    return ef_backoff_next (&self->backoff);
}

int
ef_restarts_count (const ef_restarts_t *self)
{
    return self->n;
}
