"""Backpressure: while the database cannot take rows, the gRPC client is
held back by flow control instead of embedflow buffering the stream."""
import threading

import psycopg2

from conftest import DATABASE
from helpers import proc_status_kb, send, stream, wait_for_stall

DIM = 256
CHUNKS = 400
CHUNK_ROWS = 100


def test_blocked_database_holds_the_client(embedflow, db, schema):
    ef = embedflow(writers=1, dim=DIM,
                   extra=["--batch-rows", "100"])
    chunks = stream(CHUNKS * CHUNK_ROWS, DIM, CHUNK_ROWS, doc_prefix="bp")
    sent = [0]

    def counted():
        for c in chunks:
            sent[0] += 1
            yield c

    locker = psycopg2.connect(DATABASE)
    cur = locker.cursor()
    cur.execute(f'LOCK TABLE "{schema}".chunk IN ACCESS EXCLUSIVE MODE')
    result, error = {}, {}

    def uploader():
        try:
            result["r"] = send(ef.target, counted())
        except Exception as e:     # reported by the assertions below
            error["e"] = e

    t = threading.Thread(target=uploader)
    t.start()
    try:
        held = wait_for_stall(lambda: sent[0])
        rss = proc_status_kb(ef.proc.pid)
        # The links hold at most a few dozen chunks (hwm on both sides of
        # chunks and batches, one batch in each actor) plus what HTTP/2
        # flow control lets through; never the whole stream.
        assert held < CHUNKS // 4, f"client sent {held} of {CHUNKS} chunks " \
                                   "while the database was blocked"
        assert rss < 150 * 1024, f"RSS {rss} kB while blocked"
    finally:
        locker.commit()
        locker.close()
    t.join(300)
    assert not t.is_alive()
    assert "e" not in error, error.get("e")
    r = result["r"]
    assert r.received == r.written == CHUNKS * CHUNK_ROWS
    assert r.dead_lettered == 0
    assert db.count(schema, "chunk") == CHUNKS * CHUNK_ROWS
    assert db.count(schema, "embedding") == CHUNKS * CHUNK_ROWS
