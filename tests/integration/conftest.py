"""Fixtures for the integration tests: the real embedflow binary, the test
PostgreSQL (tests/pg.sh) and Python grpcio clients.

Environment (set by ctest, see tests/CMakeLists.txt):
  EMBEDFLOW_BIN     the binary under test
  EF_TEST_DATABASE  libpq conninfo of the test PostgreSQL
  PYTHONPATH        build/python (stubs) and examples/python (upload.py)
"""
import os
import re
import signal
import subprocess
import threading
import time

import psycopg2
import pytest

EMBEDFLOW_BIN = os.environ.get("EMBEDFLOW_BIN", "")
DATABASE = os.environ.get("EF_TEST_DATABASE", "")
START_TIMEOUT = 30     # seconds until "listening on" must appear
STOP_TIMEOUT = 60      # seconds a drain may take (slower under ASan)

_LISTENING = re.compile(r"listening on (\S+:\d+)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "delivery_timeout(T): the ingest host's delivery_timeout "
        "in test_split_delivery")
    if not EMBEDFLOW_BIN or not DATABASE:
        raise pytest.UsageError(
            "run through ctest, or set EMBEDFLOW_BIN and EF_TEST_DATABASE")


def clean_env(**extra):
    """The environment for a child embedflow: no libpq variables or
    DATABASE_URL from the caller's shell, so only its flags choose the
    database."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PG") and k != "DATABASE_URL"}
    env.update(extra)
    return env


class Embedflow:
    """One `embedflow run` process. Its stderr is read by a thread (so the
    process never blocks on a full pipe) into .lines; .target is the gRPC
    address it announced."""

    def __init__(self, args, env=None, prefix=()):
        # prefix: a command that runs the binary, e.g. `ip netns exec NS`
        self.args = list(prefix) + [EMBEDFLOW_BIN] + list(args)
        self.lines = []
        self.target = None
        self.expect_exit = None     # None: teardown asserts a clean exit
        self._ready = threading.Event()
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env=env or clean_env())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
            m = _LISTENING.search(line)
            if m and not self._ready.is_set():
                self.target = m.group(1)
                self._ready.set()
        with self._cond:
            self._cond.notify_all()
        self._ready.set()           # EOF: wake a waiter; target stays None

    @property
    def log(self):
        with self._cond:
            return "\n".join(self.lines)

    def wait_ready(self, timeout=START_TIMEOUT):
        if not self._ready.wait(timeout) or self.target is None:
            try:
                self.proc.wait(5)       # it closed its output: exiting?
            except subprocess.TimeoutExpired:
                pass
            pytest.fail(f"embedflow did not announce 'listening on' within "
                        f"{timeout} s (exit {self.proc.returncode}); "
                        f"command {' '.join(self.args)}\nlog:\n{self.log}")
        return self

    def wait_for_line(self, pattern, timeout=30, after=0, nth=1):
        """Blocks until `nth` log lines (from line index `after` on) match
        pattern; returns the nth match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = after
        found = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    m = rx.search(line)
                    if m:
                        found += 1
                        if found == nth:
                            return m
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (not self._reader.is_alive()
                                 and seen == len(self.lines)):
                    pytest.fail(f"no log line matching {pattern!r}\n"
                                f"log:\n{self.log}")
                self._cond.wait(min(left, 1.0))

    def alive(self):
        return self.proc.poll() is None

    def send_signal(self, sig):
        if self.alive():
            self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Sends sig and waits for the exit; returns the exit code."""
        self.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"embedflow did not exit within {timeout} s of "
                        f"{sig.name}\nlog:\n{self.log}")
        self._reader.join(10)
        return rc


def unique_name(request, prefix="it"):
    """A schema name unique to this test run and test (max 63 chars)."""
    unique_name.counter = getattr(unique_name, "counter", 0) + 1
    base = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())
    return f"{prefix}_{os.getpid()}_{unique_name.counter}_{base}"[:63]


class Database:
    """psycopg2 on the test PostgreSQL, autocommit, with small helpers."""

    def __init__(self, conninfo):
        self.conn = psycopg2.connect(conninfo)
        self.conn.autocommit = True

    def rows(self, query, params=None):
        with self.conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []

    def scalar(self, query, params=None):
        rows = self.rows(query, params)
        return rows[0][0] if rows else None

    def count(self, schema, table):
        return self.scalar(f'SELECT count(*) FROM "{schema}"."{table}"')

    def close(self):
        self.conn.close()


@pytest.fixture(scope="session")
def db():
    database = Database(DATABASE)
    yield database
    database.close()


@pytest.fixture
def schema(request, db):
    """A fresh schema name; the schema is dropped after the test."""
    name = unique_name(request)
    yield name
    db.rows(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def embedflow(request, schema):
    """Starts `embedflow run` on the test database:

        ef = embedflow(writers=4, dim=16, extra=["--actors.X.key", "v"])

    returns a ready Embedflow (after its 'listening on' line) with .target,
    .proc and .log. At teardown each one still running gets SIGTERM and
    must exit 0, unless the test set .expect_exit (e.g. after killing it).
    """
    started = []

    def start(schema_name=None, writers=2, dim=16, extra=(), ready=True):
        args = ["run", "--database", DATABASE,
                "--schema", schema_name or schema,
                "--listen", "127.0.0.1:0",
                "--writers", str(writers), "--dim", str(dim), *extra]
        ef = Embedflow(args)
        started.append(ef)
        return ef.wait_ready() if ready else ef

    yield start

    failures = []
    for ef in started:
        if ef.expect_exit is None:
            rc = ef.stop()
            if rc != 0:
                failures.append(f"embedflow exited {rc} after SIGTERM\n"
                                f"log:\n{ef.log}")
        elif ef.alive():
            ef.stop(signal.SIGKILL)
    if failures:
        pytest.fail("\n\n".join(failures))
