"""Cache invalidation through the transactional outbox: changed document
ids reach the API server's CacheService (examples/python/cache_server.py,
real grpcio) after they commit, across an API server outage and a kill -9
of embedflow; ids that cannot be delivered within the retry budget go to
the DLQ; unchanged rows invalidate nothing."""
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import DATABASE, EMBEDFLOW_BIN, clean_env
from helpers import chunk, row, send, stream, wait_until

DIM = 8
HERE = os.path.dirname(os.path.abspath(__file__))
CACHE_SERVER = os.path.join(HERE, "..", "..", "examples", "python",
                            "cache_server.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CacheServer:
    """examples/python/cache_server.py on 127.0.0.1:port, recording every
    call it gets to a file (kept across restarts on the same port)."""

    def __init__(self, port, record, *extra):
        self.port = port
        self.record = record
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", CACHE_SERVER, "--listen",
             f"127.0.0.1:{port}", "--record", record, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("listening on"), line
        # Keep reading so the server never blocks on a full pipe.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def calls(record):
    """The calls recorded so far: [(source, [ids])]."""
    if not os.path.exists(record):
        return []
    with open(record) as f:
        return [(c["source"], c["document_ids"])
                for c in map(json.loads, f) if c]


def delivered(record):
    return {(s, d) for s, ids in calls(record) for d in ids}


def outbox(db, schema):
    return db.count(schema, "invalidation_outbox")


def docs_of(chunks, source):
    return {(source, it.document_id) for c in chunks for it in c.items}


@pytest.fixture
def record(tmp_path):
    return str(tmp_path / "calls.jsonl")


@pytest.fixture
def cache_server():
    """Starts CacheServers (cache_server(port, record, *flags)); every one
    still running is stopped after the test, also when it failed."""
    started = []

    def start(port, record, *extra):
        server = CacheServer(port, record, *extra)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_api_server_down_for_10_seconds(embedflow, db, schema, record,
                                        cache_server):
    port = free_port()
    api = cache_server(port, record)
    ef = embedflow(dim=DIM, extra=[
        "--api-server", f"127.0.0.1:{port}", "--batch-rows", "100",
        "--actors.cache-invalidator.retry_cap", "500ms",
        "--actors.cache-invalidator.retry_budget", "200"])
    first = stream(400, DIM, 50, doc_prefix="a")
    assert send(ef.target, first, source="s1").written == 400
    # delivered means the server got the call; the outbox row goes when
    # the invalidator has the answer
    wait_until("the first upload's ids", lambda:
               docs_of(first, "s1") <= delivered(record)
               and outbox(db, schema) == 0)

    api.stop()
    down = time.monotonic()
    n_calls = len(calls(record))
    second = stream(600, DIM, 50, doc_prefix="b")
    assert send(ef.target, second, source="s1").written == 600
    # Changed content for some documents of the first upload.
    changed = [chunk([row(f"a-{i:06d}", 0, DIM, content=f"new {i}")
                      for i in range(5)], 1)]
    assert send(ef.target, changed, source="s2").written == 5
    waiting = outbox(db, schema)
    assert waiting >= len(docs_of(second, "s1")) + 5, waiting
    ef.wait_for_line(r"Invalidate on .* failed")
    time.sleep(max(0.0, 10 - (time.monotonic() - down)))   # the outage
    assert len(calls(record)) == n_calls
    api = cache_server(port, record)
    back = time.monotonic()
    want = docs_of(second, "s1") | {("s2", f"a-{i:06d}") for i in range(5)}
    wait_until("every id after the outage", lambda:
               want <= delivered(record) and outbox(db, schema) == 0)
    print(f"invalidation: API server down 10 s, {waiting} outbox rows "
          f"waiting, all {len(want)} ids delivered "
          f"{time.monotonic() - back:.1f} s after it came back")
    assert db.count(schema, "dead_letter") == 0
    api.stop()


def test_outage_beyond_retry_budget_goes_to_dlq(embedflow, db, schema,
                                                record, cache_server):
    port = free_port()          # nobody listens there
    ef = embedflow(dim=DIM, extra=[
        "--api-server", f"127.0.0.1:{port}",
        "--actors.cache-invalidator.poll", "100ms",
        "--actors.cache-invalidator.retry_budget", "3",
        "--actors.cache-invalidator.retry_base", "10ms",
        "--actors.cache-invalidator.retry_cap", "50ms"])
    items = [row(f"lost-{i}", j, DIM) for i in range(4) for j in range(3)]
    r = send(ef.target, [chunk(items, 1)], source="s9")
    assert (r.written, r.dead_lettered) == (12, 0)
    wait_until("the outbox to empty", lambda: outbox(db, schema) == 0)
    dead = db.rows(f'SELECT stage, reason_code, document_id, source, covers, '
                   f'attempts, reason FROM "{schema}".dead_letter '
                   f'ORDER BY document_id')
    assert [(d[0], d[1], d[2], d[3], d[4]) for d in dead] == \
        [("invalidate", "invalidate_failed", f"lost-{i}", "s9", 0)
         for i in range(4)]
    assert all(d[5] == 4 and "UNAVAILABLE" in d[6] for d in dead), dead
    assert db.count(schema, "chunk") == 12

    # Once the API server is back, `dlq replay` returns them to the outbox
    # and an invalidator (here the next start, with the default budget)
    # delivers them.
    assert ef.stop() == 0
    api = cache_server(port, record)
    p = subprocess.run([EMBEDFLOW_BIN, "dlq", "replay", "--stage",
                        "invalidate", "--database", DATABASE, "--schema",
                        schema], capture_output=True, text=True, timeout=60,
                       env=clean_env())
    assert p.returncode == 0, p.stderr
    assert "returned 4 failed invalidations to the outbox" in p.stdout
    assert outbox(db, schema) == 4
    embedflow(dim=DIM, extra=["--api-server", f"127.0.0.1:{port}"])
    want = {("s9", f"lost-{i}") for i in range(4)}
    wait_until("the replayed ids", lambda:
               want <= delivered(record) and outbox(db, schema) == 0)
    assert db.scalar(f'SELECT count(*) FROM "{schema}".dead_letter '
                     f'WHERE replayed_at IS NULL') == 0
    api.stop()


def test_slow_api_server_times_out_into_the_dlq(embedflow, db, schema,
                                                record, cache_server):
    port = free_port()
    api = cache_server(port, record, "--delay", "2")
    ef = embedflow(dim=DIM, extra=[
        "--api-server", f"127.0.0.1:{port}",
        "--actors.cache-invalidator.timeout", "200ms",
        "--actors.cache-invalidator.retry_budget", "1",
        "--actors.cache-invalidator.retry_cap", "50ms"])
    send(ef.target, [chunk([row("slow", 0, DIM)], 1)], source="s5")
    wait_until("the slow id in the DLQ", lambda: db.scalar(
        f'SELECT count(*) FROM "{schema}".dead_letter '
        f"WHERE stage = 'invalidate'") == 1)
    reason = db.scalar(f'SELECT reason FROM "{schema}".dead_letter')
    assert "DEADLINE_EXCEEDED" in reason, reason
    wait_until("the outbox to empty", lambda: outbox(db, schema) == 0)
    api.stop()


def test_kill_9_between_commit_and_invalidation(embedflow, db, schema,
                                                record, cache_server):
    port = free_port()          # the API server is down at first
    args = ["--api-server", f"127.0.0.1:{port}",
            "--actors.cache-invalidator.retry_cap", "200ms"]
    ef = embedflow(dim=DIM, extra=args)
    chunks = stream(300, DIM, 50, doc_prefix="k")
    assert send(ef.target, chunks, source="s3").written == 300
    # Committed, not yet delivered: the ids wait in the outbox.
    assert outbox(db, schema) == len(docs_of(chunks, "s3"))
    ef.wait_for_line(r"Invalidate on .* failed")
    ef.proc.kill()
    ef.proc.wait(10)
    ef.expect_exit = -signal.SIGKILL
    assert outbox(db, schema) == len(docs_of(chunks, "s3"))

    api = cache_server(port, record)
    embedflow(dim=DIM, extra=args)
    wait_until("the outbox to drain after the restart", lambda:
               outbox(db, schema) == 0)
    assert docs_of(chunks, "s3") <= delivered(record)
    api.stop()


def test_unchanged_rows_invalidate_nothing(embedflow, db, schema, record,
                                           cache_server):
    port = free_port()
    api = cache_server(port, record)
    ef = embedflow(dim=DIM, extra=["--api-server", f"127.0.0.1:{port}"])
    chunks = stream(200, DIM, 50, doc_prefix="u")
    assert send(ef.target, chunks, source="s7").written == 200
    wait_until("the first ids", lambda:
               docs_of(chunks, "s7") <= delivered(record))
    before = len(calls(record))

    again = send(ef.target, chunks, source="s7")      # the very same rows
    assert (again.received, again.dead_lettered) == (200, 0)
    # A changed row after them: once its id arrives, everything committed
    # before it has been handed to the invalidator.
    send(ef.target, [chunk([row("marker", 0, DIM)], 1)], source="s7")
    wait_until("the marker", lambda: ("s7", "marker") in delivered(record))
    after = calls(record)[before:]
    assert after == [("s7", ["marker"])], after
    # the marker's outbox row goes once Invalidate has returned, a moment
    # after the API server saw the call
    wait_until("an empty outbox", lambda: db.scalar(
        f'SELECT count(*) FROM "{schema}".invalidation_outbox') == 0)
    api.stop()


def test_no_api_server_no_outbox(embedflow, db, schema):
    ef = embedflow(dim=DIM)
    assert send(ef.target, stream(100, DIM, 50)).written == 100
    assert outbox(db, schema) == 0
    assert db.count(schema, "chunk") == 100
