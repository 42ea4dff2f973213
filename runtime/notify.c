/*  notify.c — tells systemd how the process is doing (Type=notify units).

    libsystemd's sd_notify sends to $NOTIFY_SOCKET; with no such variable
    (a process not started by systemd) every call here does nothing. The
    watchdog is on when the unit sets WatchdogSec= (systemd passes
    $WATCHDOG_USEC, and $WATCHDOG_PID when meant for one process only); the
    runtime's loop then pings at half that interval, as sd_watchdog_enabled(3)
    advises.
*/
#include "internal.h"

#include "embedflow/log.h"

#include <stdatomic.h>
#include <string.h>
#include <systemd/sd-daemon.h>

static atomic_int s_warned; /* a failed send was logged once */

/* Sends state; logs the first failure (a socket that is set but cannot be
   reached: systemd will act on the missing message, the log says why). */
static void
s_notify (const char *state)
{
    int rc = sd_notify (0, state);
    if (rc < 0 && atomic_exchange (&s_warned, 1) == 0)
        ef_warn ("cannot notify systemd (%s): %s", state, strerror (-rc));
}

void
ef_notify_ready (void)
{
    s_notify ("READY=1\nSTATUS=running");
}

void
ef_notify_stopping (void)
{
    s_notify ("STOPPING=1\nSTATUS=draining");
}

int64_t
ef_notify_watchdog_interval_us (void)
{
    uint64_t usec = 0;
    if (sd_watchdog_enabled (0, &usec) <= 0 || usec == 0)
        return 0;
    return (int64_t) (usec / 2 > 0 ? usec / 2 : 1);
}

void
ef_notify_watchdog (void)
{
    s_notify ("WATCHDOG=1");
}
