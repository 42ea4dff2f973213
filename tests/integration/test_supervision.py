"""Supervision of actors: a db-writer that fails is restarted in place
and no row is lost; past actors.db-writer.max_restarts the process stops
with exit 1, naming the writer and the count.

A real writer cannot fail on demand, so the failures are injected:
EMBEDFLOW_TEST_FAIL_WRITE=N:K makes the writers' handle fail K times once
N batches have been taken (it fails before taking its batch, which it
gives back to the restarted writer)."""
import signal

from conftest import DATABASE, Embedflow, clean_env
from helpers import BackgroundUpload, scrape, stream

_METRICS = r"metrics on (http://\S+:\d+)/metrics"


def start(schema, fail, writers, extra=()):
    ef = Embedflow(["run", "--database", DATABASE, "--schema", schema,
                    "--listen", "127.0.0.1:0", "--writers", str(writers),
                    "--dim", "8", "--batch-rows", "50",
                    "--metrics", "127.0.0.1:0", *extra],
                   env=clean_env(EMBEDFLOW_TEST_FAIL_WRITE=fail))
    return ef.wait_ready()


def restarts(base):
    """{actor: embedflow_actor_restarts_total} of every instance."""
    return {k.split('"')[1]: v for k, v in scrape(base).items()
            if k.startswith("embedflow_actor_restarts_total{")}


def test_failed_writer_restarted_no_row_lost(db, schema):
    """Three failures of the writers during an upload of 2,000 rows: the
    exact row set is stored, the upload ends OK, the restarts metric says
    3, each restart is logged with its reason, and the process runs on
    (and drains cleanly on SIGTERM)."""
    ef = start(schema, "5:3", writers=2)
    try:
        base = ef.wait_for_line(_METRICS).group(1)
        before = restarts(base)
        assert before and set(before.values()) == {0}, before
        up = BackgroundUpload(ef.target, stream(2000, 8, 100))
        up.finish(db, schema)
        after = restarts(base)
        writers = {k: v for k, v in after.items() if k.startswith("db-writer")}
        assert sum(writers.values()) == 3, after
        assert sum(after.values()) == 3, after
        for n in (1, 2, 3):
            ef.wait_for_line(r"db-writer\[\d\]: failed: injected failure "
                             rf"{n} of 3 \(EMBEDFLOW_TEST_FAIL_WRITE\); "
                             r"restarting in \d+ ms")
        assert ef.alive()
        # the process still takes uploads after the restarts
        again = BackgroundUpload(ef.target,
                                 stream(200, 8, 100, doc_prefix="again"))
        assert again.wait() is None
        assert again.outcome["result"].written == 200
    finally:
        rc = ef.stop()
    assert rc == 0, ef.log


def test_writer_past_max_restarts_stops_the_process(schema):
    """One writer failing 3 times in its restart_window with max_restarts
    2: two restarts, then the process stops with exit 1 and a line naming
    the writer and the count."""
    ef = start(schema, "2:3", writers=1,
               extra=["--actors.db-writer.max_restarts", "2"])
    up = BackgroundUpload(ef.target, stream(1000, 8, 100))
    try:
        rc = ef.proc.wait(60)
    finally:
        if ef.alive():
            ef.stop(signal.SIGKILL)
    ef.expect_exit = rc
    assert rc == 1, ef.log
    ef.wait_for_line(r"db-writer: failed: injected failure 2 of 3 .*"
                     r"restarting in \d+ ms \(restart 2 of at most 2")
    ef.wait_for_line(r"db-writer stopped: failed 3 times within "
                     r"restart_window 60000 ms \(max_restarts 2\): injected "
                     r"failure 3 of 3")
    assert up.wait() is not None    # the upload was cut, not claimed
