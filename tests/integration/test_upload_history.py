"""Upload history: the job_run row of an upload in progress gets a
heartbeat and its counts, and an upload whose process was killed is
marked 'abandoned' by the next embedflow process on the database, while a
live process's uploads are left alone. A blocked job_run does not stop
the data."""
import json
import queue
import re
import signal
import subprocess
import threading
import uuid

import grpc
import psycopg2

from conftest import DATABASE, EMBEDFLOW_BIN, clean_env
from helpers import send, stream, wait_until

DIM = 16
BEAT = ["--actors.grpc-receiver.heartbeat", "200ms"]
FAST = BEAT + ["--actors.grpc-receiver.stale_after", "1s"]
ABANDONED = re.compile(r"^heartbeat stopped at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d "
                       r"UTC: the process taking the upload is gone$")


class GatedUpload:
    """An upload whose chunks go out only when the test hands them over:
    the call stays open, in progress, as long as the test wants."""

    def __init__(self, target, source):
        self.chunks = queue.Queue()
        self.result = None
        self.error = None
        self.thread = threading.Thread(
            target=self._run, args=(target, source), daemon=True)
        self.thread.start()

    def _gen(self):
        while True:
            c = self.chunks.get()
            if c is None:
                return
            yield c

    def _run(self, target, source):
        try:
            self.result = send(target, self._gen(), source=source,
                               timeout=60)
        except grpc.RpcError as e:
            self.error = e

    def put(self, chunk):
        self.chunks.put(chunk)

    def finish(self):
        self.chunks.put(None)
        self.thread.join(60)
        assert not self.thread.is_alive(), "the upload did not end"


def run_of(db, schema, job):
    """The newest job_run row of job as a dict, None when there is none
    (also before the process has created the table)."""
    if not db.scalar("SELECT to_regclass(%s)", (f'"{schema}".job_run',)):
        return None
    rows = db.rows(
        f'SELECT id::text, trigger, status, rows_received, rows_written,'
        f' rows_dead_lettered, started_at, heartbeat_at, finished_at, error'
        f' FROM "{schema}".job_run WHERE job = %s'
        f' ORDER BY started_at DESC LIMIT 1', (job,))
    if not rows:
        return None
    keys = ["id", "trigger", "status", "received", "written", "dead",
            "started_at", "heartbeat_at", "finished_at", "error"]
    return dict(zip(keys, rows[0]))


def ghost(db, schema, job):
    """Inserts the 'running' upload of a process long gone."""
    db.rows(f'INSERT INTO "{schema}".job_run (id, job, trigger, status,'
            f' started_at, heartbeat_at) VALUES (%s, %s, \'upload\','
            f' \'running\', now() - interval \'1 hour\','
            f' now() - interval \'1 hour\')', (str(uuid.uuid4()), job))


def marked(ef):
    """How many upload runs this process reported marking abandoned."""
    return sum(int(m) for m in
               re.findall(r"marked (\d+) upload run\(s\) abandoned", ef.log))


def jobs(schema, *args):
    p = subprocess.run([EMBEDFLOW_BIN, "jobs", "--database", DATABASE,
                        "--schema", schema, *args],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=clean_env(), timeout=60)
    out = p.stdout.decode("utf-8", "replace")
    assert p.returncode == 0, out
    return out


def test_upload_in_progress_heartbeats(embedflow, db, schema):
    ef = embedflow(writers=1, dim=DIM, extra=BEAT)
    chunks = stream(30, DIM, 10, doc_prefix="hb")
    up = GatedUpload(ef.target, "slow-src")
    try:
        up.put(chunks[0])
        # the counts reach the row while the call is still open
        first = wait_until("the first chunk in the history", lambda: (
            lambda r: r if r and r["received"] == 10 and r["written"] == 10
            else None)(run_of(db, schema, "slow-src")))
        assert first["trigger"] == "upload" and first["status"] == "running"
        # nothing sent: the heartbeat still moves
        wait_until("a later heartbeat", lambda: run_of(
            db, schema, "slow-src")["heartbeat_at"] > first["heartbeat_at"])
        up.put(chunks[1])
        second = wait_until("the second chunk in the history", lambda: (
            lambda r: r if r["received"] == 20 and r["written"] == 20
            else None)(run_of(db, schema, "slow-src")))
        assert second["status"] == "running"
        assert second["heartbeat_at"] > first["heartbeat_at"]
        table = jobs(schema)
        assert re.search(r"slow-src +upload +running .* heartbeat \d+ s ago",
                         table), table
        up.put(chunks[2])
    finally:
        up.finish()
    assert up.error is None, up.error
    assert up.result.written == 30
    done = run_of(db, schema, "slow-src")
    assert done["id"] == up.result.job_id
    assert (done["status"], done["received"], done["written"]) == \
        ("completed", 30, 30)


def test_killed_upload_is_abandoned_by_the_next_process(embedflow, db,
                                                         schema):
    first = embedflow(writers=1, dim=DIM, extra=FAST)
    ok = send(first.target, stream(20, DIM, 10, doc_prefix="ok"),
              source="done-src")
    assert ok.written == 20
    up = GatedUpload(first.target, "killed-src")
    up.put(stream(10, DIM, 10, doc_prefix="k")[0])
    wait_until("the upload's counts", lambda: (
        lambda r: r and r["received"] == 10)(run_of(db, schema, "killed-src")))
    first.expect_exit = -signal.SIGKILL
    first.proc.kill()
    first.proc.wait(30)
    up.finish()
    assert up.error is not None      # the client saw its server die
    killed = run_of(db, schema, "killed-src")
    assert killed["status"] == "running"   # nobody left to end it

    second = embedflow(writers=1, dim=DIM, extra=FAST)
    gone = wait_until("the killed upload to be abandoned", lambda: (
        lambda r: r if r["status"] == "abandoned" else None)(
            run_of(db, schema, "killed-src")), timeout=30)
    assert ABANDONED.match(gone["error"]), gone["error"]
    assert gone["finished_at"] == gone["heartbeat_at"]
    assert gone["received"] == 10          # the last beat's counts stay
    # the row is committed before the line is logged
    wait_until("the abandoned run to be logged", lambda: marked(second) >= 1)
    assert marked(second) == 1, second.log
    assert run_of(db, schema, "done-src")["status"] == "completed"

    table = jobs(schema)
    line = next(l for l in table.splitlines() if "killed-src" in l)
    assert re.search(r"upload +abandoned .* heartbeat stopped at", line), table
    runs = {r["job"]: r for r in json.loads(jobs(schema, "--json"))}
    assert runs["killed-src"]["status"] == "abandoned"
    assert runs["done-src"]["status"] == "completed"


def test_live_upload_is_not_abandoned_by_another_process(embedflow, db,
                                                         schema):
    # the process holding the upload sweeps only at its start, so what
    # gets marked below is the second process's doing
    live = embedflow(writers=1, dim=DIM,
                     extra=BEAT + ["--actors.grpc-receiver.stale_after",
                                   "60s"])
    chunks = stream(20, DIM, 10, doc_prefix="live")
    up = GatedUpload(live.target, "live-src")
    try:
        up.put(chunks[0])
        wait_until("the live upload's counts", lambda: (
            lambda r: r and r["received"] == 10)(
                run_of(db, schema, "live-src")))
        ghost(db, schema, "ghost-1")
        other = embedflow(writers=1, dim=DIM, extra=FAST)
        wait_until("the ghost to be abandoned at start", lambda: run_of(
            db, schema, "ghost-1")["status"] == "abandoned")
        # a ghost inserted now is found by a periodic sweep, at least
        # stale_after after the live upload's start: without heartbeats
        # that sweep would take the live upload too
        ghost(db, schema, "ghost-2")
        wait_until("the second ghost to be abandoned", lambda: run_of(
            db, schema, "ghost-2")["status"] == "abandoned")
        r = run_of(db, schema, "live-src")
        assert (r["status"], r["error"]) == ("running", None)
        wait_until("the abandoned runs to be logged",
                   lambda: marked(other) >= 2)
        assert marked(other) == 2, other.log
        up.put(chunks[1])
    finally:
        up.finish()
    assert up.error is None, up.error
    r = run_of(db, schema, "live-src")
    assert (r["status"], r["received"], r["written"]) == ("completed", 20, 20)


def test_blocked_history_does_not_stop_the_data(embedflow, db, schema):
    ef = embedflow(writers=1, dim=DIM, extra=BEAT)
    chunks = stream(200, DIM, 10, doc_prefix="lk")
    up = GatedUpload(ef.target, "locked-src")
    locker = psycopg2.connect(DATABASE)
    try:
        up.put(chunks[0])
        wait_until("the upload's counts", lambda: (
            lambda r: r and r["received"] == 10)(
                run_of(db, schema, "locked-src")))
        locker.cursor().execute(
            f'LOCK TABLE "{schema}".job_run IN ACCESS EXCLUSIVE MODE')
        # the heartbeat waits on the lock at most statement_timeout, then
        # backs off: rows sent after that still get through
        ef.wait_for_line(r"job history not recorded: .*statement timeout")
        for c in chunks[1:]:
            up.put(c)
        wait_until("all rows written while job_run is locked",
                   lambda: db.count(schema, "chunk") == 200)
        locker.rollback()
        wait_until("the heartbeat to catch up", lambda: run_of(
            db, schema, "locked-src")["received"] == 200)
    finally:
        locker.close()
        up.finish()
    assert up.error is None, up.error
    assert run_of(db, schema, "locked-src")["status"] == "completed"


def test_bad_receiver_settings_are_usage_errors(embedflow):
    cases = [
        (["--actors.grpc-receiver.heartbeat", "1s",
          "--actors.grpc-receiver.stale_after", "1500ms"],
         r"config actors.grpc-receiver.stale_after: 1500 ms must be at least "
         r"twice heartbeat \(1000 ms\)"),
        (["--actors.grpc-receiver.tls_cert", "/etc/hostname"],
         r"config actors.grpc-receiver.tls_key: tls_cert and tls_key must be "
         r"set together"),
    ]
    for extra, want in cases:
        ef = embedflow(dim=DIM, ready=False, extra=extra)
        ef.expect_exit = 2
        assert ef.proc.wait(30) == 2, ef.log
        ef.wait_for_line(want)