"""An idle `embedflow run` waits instead of polling: with the receiver
listening, a scheduler whose only job is not due, the puller (after a
run that ended, so its gRPC channel and queue exist), the splitter, two
writers, the DLQ and the cache invalidator, the process uses next to no
CPU over 10 s (utime + stime from /proc/PID/stat)."""
import os
import time

from helpers import row, send, chunk
from pullhelp import AiServer, runs

DIM = 8
WINDOW_S = 10.0
# CPU seconds per second the idle process may use. Polling gRPC's queue
# every 5 ms cost about 0.013 here; waiting costs about 0.001 (the
# runtime's signal watch and the runlog's sweep).
LIMIT = 0.005


def cpu_seconds(pid):
    """utime + stime of every thread of pid, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        # the command name may hold spaces: fields start after its ")"
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_idle_process_uses_no_cpu(db, schema, embedflow):
    server = AiServer(64, DIM)
    try:
        ef = embedflow(dim=DIM, extra=[
            "--jobs.src.target", server.target,
            "--jobs.src.source", "src",
            "--jobs.src.schedule", "0 0 1 1 *",     # not due for months
            "--actors.scheduler.run_now", "src"])
        ef.wait_for_line(r"run \S+ completed")
        result = send(ef.target, [chunk([row("d", i, DIM) for i in range(4)],
                                        0)])
        assert result.written == 4
        assert [r["status"] for r in runs(db, schema)] == ["completed"]

        pid = ef.proc.pid
        start, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(WINDOW_S)              # the measurement window itself
        used, elapsed = cpu_seconds(pid) - start, time.monotonic() - t0
        rate = used / elapsed
        print(f"idle CPU: {used:.3f} s over {elapsed:.1f} s = {rate:.4f}")
        assert rate < LIMIT, (f"idle process used {used:.3f} CPU-s in "
                              f"{elapsed:.1f} s\nlog:\n{ef.log}")
        assert ef.stop() == 0, ef.log
    finally:
        server.stop()
