"""Streams that end badly, and stopping the process while one is open."""
import signal
import threading
import time

import grpc

from helpers import CALL_TIMEOUT, send, stream, upload
from embedflow.v1 import embedding_pb2_grpc

DIM = 8


def _wait_for_rows(db, schema, timeout=15):
    """Waits until the pipeline has committed something. PostgreSQL has no
    event to wait on here, so this polls (briefly, bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.scalar(f"SELECT to_regclass('\"{schema}\".chunk')") and \
                db.count(schema, "chunk") > 0:
            return
        time.sleep(0.05)


def test_client_disconnect_mid_stream(embedflow, db, schema):
    ef = embedflow(dim=DIM)
    chunks = stream(5000, DIM, 100)       # 50 chunks; 10 get sent
    sent, release = threading.Event(), threading.Event()

    def requests():
        for i, c in enumerate(chunks):
            if i == 10:
                sent.set()
                release.wait(60)        # hold the stream open, unfinished
                return
            yield c

    channel = grpc.insecure_channel(ef.target)
    stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
    future = stub.UploadEmbeddings.future(requests(), timeout=CALL_TIMEOUT)
    try:
        assert sent.wait(60)
        _wait_for_rows(db, schema)
        future.cancel()               # the client goes away mid-stream
    finally:
        release.set()
        channel.close()
    assert future.cancelled()

    # Still serving: a new upload completes, and what the cancelled one
    # committed stays (never more than it sent).
    assert ef.alive(), ef.log
    result = send(ef.target, stream(500, DIM, 100, doc_prefix="after"))
    assert (result.received, result.written) == (500, 500)
    assert db.scalar(f'SELECT count(*) FROM "{schema}".chunk '
                     f"WHERE document_id LIKE 'after-%%'") == 500
    assert db.scalar(f'SELECT count(*) FROM "{schema}".chunk '
                     f"WHERE document_id LIKE 'doc-%%'") <= 1000
    assert ef.alive(), ef.log


def test_sigterm_during_upload_drains_and_acknowledges(embedflow, db, schema):
    ef = embedflow(dim=DIM)
    ef.expect_exit = 0                    # this test stops it itself
    chunks = stream(20000, DIM, 200)      # 100 chunks
    halfway, signalled = threading.Event(), threading.Event()

    def requests():
        for i, c in enumerate(chunks):
            if i == 50:
                halfway.set()
                signalled.wait(60)        # SIGTERM lands mid-stream
            yield c

    outcome = {}

    def client():
        try:
            outcome["result"] = upload(ef.target, requests(),
                                       timeout=CALL_TIMEOUT)
        except grpc.RpcError as e:
            outcome["error"] = e

    t = threading.Thread(target=client)
    t.start()
    assert halfway.wait(60), ef.log
    ef.send_signal(signal.SIGTERM)
    signalled.set()
    t.join(CALL_TIMEOUT)
    assert not t.is_alive(), "the upload hangs after SIGTERM"
    rc = ef.proc.wait(60)

    err = outcome.get("error")
    assert err is None, \
        f"upload failed: {err.code()}: {err.details()}\nlog:\n{ef.log}"
    result = outcome["result"]
    assert rc == 0, ef.log
    # Acknowledged means committed: the result matches the table.
    assert result.written > 0
    assert result.written == db.count(schema, "chunk")
    assert result.received == result.written + result.dead_lettered
