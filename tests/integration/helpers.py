"""Row builders and small clients shared by the integration tests."""
import math
import os
import random
import re
import shutil
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

import grpc
import psycopg2
import pytest

from embedflow.v1 import embedding_pb2
from upload import SERVICE, chunked, synthetic_rows, upload  # noqa: F401

CALL_TIMEOUT = 180     # seconds any one upload may take (ASan is slow)


def row(doc, index, dim, content=None, seed=0, id="", vector=None):
    """One Embedding with a deterministic vector for (seed, doc, index)."""
    if vector is None:
        rng = random.Random(f"{seed}:{doc}:{index}")
        vector = [rng.uniform(-1.0, 1.0) for _ in range(dim)]
    return embedding_pb2.Embedding(
        id=id, document_id=doc, chunk_index=index,
        content=content if content is not None else f"{doc}/{index}",
        vector=vector, model="test-model")


def chunk(items, seq):
    return embedding_pb2.EmbeddingChunk(items=items, seq=seq)


def stream(rows, dim, chunk_rows, doc_prefix="doc", seed=0):
    """The list of EmbeddingChunks upload.py would send."""
    return list(chunked(synthetic_rows(rows, dim, doc_prefix=doc_prefix,
                                       seed=seed), chunk_rows))


def send(target, chunks, **kw):
    """Uploads and returns the UploadResult (raises grpc.RpcError)."""
    kw.setdefault("timeout", CALL_TIMEOUT)
    return upload(target, iter(chunks), **kw)


def raw_call(target, payloads, timeout=30):
    """Sends raw bytes as the messages of one UploadEmbeddings call, with
    no protobuf encoding on the way out. Returns the grpc.RpcError raised
    (or the UploadResult when the call unexpectedly succeeds)."""
    with grpc.insecure_channel(target) as channel:
        call = channel.stream_unary(
            SERVICE, request_serializer=lambda b: b,
            response_deserializer=embedding_pb2.UploadResult.FromString)
        try:
            return call(iter(payloads), timeout=timeout)
        except grpc.RpcError as e:
            return e


class BackgroundUpload:
    """An upload of chunks running in a thread while a test breaks
    something; finish() waits for it and asserts it ended OK with every
    row written and exactly these rows (last versions) in the table.
    With hold_after=N the chunks after the first N wait for release(),
    so the test can break something at a known point of the upload."""

    def __init__(self, target, chunks, hold_after=None):
        self.chunks = chunks
        self.outcome = {}
        self.hold_after = hold_after
        self.gate = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(target,))
        self.thread.start()

    def _gated(self):
        for i, c in enumerate(self.chunks):
            if i == self.hold_after:
                self.gate.wait(CALL_TIMEOUT)
            yield c

    def release(self):
        """Lets the chunks after hold_after go."""
        self.gate.set()

    def _run(self, target):
        try:
            self.outcome["result"] = send(target, self._gated())
        except grpc.RpcError as e:
            self.outcome["error"] = e

    def wait(self, timeout=180):
        """Waits for the end; returns the grpc.RpcError, or None."""
        self.release()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the upload did not end"
        return self.outcome.get("error")

    def finish(self, db, schema, timeout=180):
        err = self.wait(timeout)
        assert err is None, err.details()
        rows = sum(len(c.items) for c in self.chunks)
        r = self.outcome["result"]
        assert (r.received, r.written, r.dead_lettered) == (rows, rows, 0)
        got = db.rows(f'SELECT document_id, chunk_index, content '
                      f'FROM "{schema}".chunk')
        assert len(got) == rows
        assert set(got) == {(c.document_id, c.chunk_index, c.content)
                            for ch in self.chunks for c in ch.items}
        return r


def private_data_dir():
    """Yields a data directory for a private PostgreSQL, removed after
    (a server a failed test left there is stopped first). Not under
    pytest's tmp_path: that is 0700 and, as root, the server runs as user
    postgres, which must be able to reach it."""
    path = tempfile.mkdtemp(prefix="ef-it-", dir="/tmp")
    os.chmod(path, 0o755)
    yield os.path.join(path, "data")
    pidfile = os.path.join(path, "data", "pgdata", "postmaster.pid")
    if os.path.exists(pidfile):
        with open(pidfile) as f:
            pid = int(f.readline())
        try:
            os.kill(pid, signal.SIGQUIT)
        except ProcessLookupError:
            pass
    shutil.rmtree(path, ignore_errors=True)


def wait_until(what, predicate, timeout=60):
    """Polls predicate (a state of another process that sends no event,
    such as rows in the database) until it returns something true, and
    returns that; fails the test after timeout seconds. A
    psycopg2.OperationalError counts as not yet (a server starting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
            if value:
                return value
        except psycopg2.OperationalError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def wait_for_stall(counter, quiet=1.0, limit=30.0):
    """Returns the count once it has not moved for `quiet` seconds. There
    is no event for 'nothing more happens', so this is the one place that
    observes over time; it returns as soon as the stall is seen."""
    deadline = time.monotonic() + limit
    last, since = counter(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = counter()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    return counter()


_SAMPLE = re.compile(r'^([a-z_]+)(?:\{(.*)\})? (\S+)$')


def scrape_samples(base):
    """{(name, labels): value} of every sample on BASE/metrics; fails the
    test on a line that is not a Prometheus sample."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        text = r.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a Prometheus sample: {line!r}"
        samples[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return samples


def scrape(base):
    """{'name{labels}': value} of every sample on BASE/metrics, keyed as
    the exposition writes them."""
    return {name + (f"{{{labels}}}" if labels else ""): value
            for (name, labels), value in scrape_samples(base).items()}


def readyz(base):
    """(HTTP status, body) of BASE/readyz."""
    try:
        with urllib.request.urlopen(base + "/readyz", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def proc_status_kb(pid, key="VmRSS"):
    """A size from /proc/PID/status in kB: VmRSS now, VmHWM the peak."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def is_uuid7(text):
    """True for an RFC 9562 version-7 UUID minted within the last day."""
    u = uuid.UUID(text)
    if u.version != 7 or u.variant != uuid.RFC_4122:
        return False
    millis = u.int >> 80
    return abs(millis / 1000.0 - time.time()) < 86400


def parse_vector(text):
    """Reads a vector column's text: pgvector '[1,2]' or real[] '{1,2}'."""
    return [float(x) for x in text.strip("[]{}").split(",")]


def same_vector(a, b):
    """Equal as float4 values."""
    return len(a) == len(b) and all(
        math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-7) for x, y in zip(a, b))


def stored(db, schema, doc, index):
    """(id, content, vector, chunk.updated_at, embedding.updated_at) of the
    row with identity (doc, index), None when absent."""
    rows = db.rows(
        f'SELECT c.id::text, c.content, e.vector::text, c.updated_at, '
        f'e.updated_at FROM "{schema}".chunk c '
        f'JOIN "{schema}".embedding e USING (id) '
        f'WHERE c.document_id = %s AND c.chunk_index = %s', (doc, index))
    if not rows:
        return None
    id_, content, vector, c_upd, e_upd = rows[0]
    return id_, content, parse_vector(vector), c_upd, e_upd
