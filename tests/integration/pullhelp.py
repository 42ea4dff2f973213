"""The example AI server (examples/python/ai_server.py) as a test peer, and
`embedflow pull` runs, for the pull-mode tests."""
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from conftest import DATABASE, Embedflow, clean_env

AI_SERVER = os.path.join(os.path.dirname(__file__), "..", "..", "examples",
                         "python", "ai_server.py")
WAIT = 120     # seconds any awaited event may take (ASan is slow)


class AiServer:
    """One ai_server.py process. Its stdout (one JSON event a line) is read
    by a thread into .events; wait_for blocks on a condition until an event
    matches, so tests never poll."""

    def __init__(self, rows, dim=16, port=0, extra=()):
        self.args = [sys.executable, AI_SERVER, "--rows", str(rows),
                     "--dim", str(dim), "--port", str(port), *extra]
        self.events = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env=clean_env())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = self.wait_for(lambda e: e["event"] == "listening")["port"]
        self.target = f"127.0.0.1:{self.port}"

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"event": "text", "text": line}
            with self._cond:
                self.events.append(ev)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pred, timeout=WAIT, after=0):
        """The first event (from index `after`) for which pred is true."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for ev in self.events[after:]:
                    if pred(ev):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0 or (not self._reader.is_alive()):
                    pytest.fail(f"no matching server event; events: "
                                f"{self.events[-20:]}")
                self._cond.wait(min(left, 1.0))

    def calls(self):
        with self._cond:
            return [e for e in self.events if e["event"] == "call"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(10)


def pull(schema, target, source="src", dim=16, extra=()):
    """Starts `embedflow pull`; returns the Embedflow (not yet waited on)."""
    return Embedflow(["pull", "--database", DATABASE, "--schema", schema,
                      "--target", target, "--source", source,
                      "--dim", str(dim), *extra])


def finish(ef, timeout=WAIT):
    """Waits for a pull to exit; returns the exit code."""
    try:
        rc = ef.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        ef.proc.kill()
        ef.proc.wait()
        pytest.fail(f"embedflow pull did not finish\nlog:\n{ef.log}")
    ef._reader.join(10)
    return rc


def runs(db, schema, job="src"):
    """job_run rows of a job, oldest first, as dicts."""
    cols = ["id", "status", "trigger", "rows_received", "rows_written",
            "rows_dead_lettered", "start_token", "last_resume_token", "error"]
    rows = db.rows(f'SELECT {", ".join(cols)} FROM "{schema}".job_run '
                   f'WHERE job = %s ORDER BY started_at, id', (job,))
    return [dict(zip(cols, r)) for r in rows]


def row_numbers(db, schema):
    """The synthetic row numbers stored (from the content), sorted."""
    return [int(r[0].split()[-1]) for r in db.rows(
        f'SELECT content FROM "{schema}".chunk ORDER BY 1')]
