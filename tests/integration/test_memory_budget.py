"""Memory is bounded in bytes: while the database takes nothing, eight
uploads of 60 MB messages hold the process to max_inflight_bytes plus a
fixed overhead, instead of about 190 MB per upload; once the database is
back every row is written."""
import os
import threading

import psycopg2

from conftest import DATABASE
from embedflow.v1 import embedding_pb2
from helpers import proc_status_kb, scrape, send, wait_for_stall, wait_until

DIM = 8
UPLOADS = 8
MESSAGES = 2
ROWS = 120                       # per message
CONTENT = "x" * (500 * 1024)     # 120 rows x 500 kB = 60 MB a message
BUDGET_MB = int(os.environ.get("EF_TEST_BUDGET_MB", "128"))
MAX_MESSAGE_MB = 64
# README, Memory: peak RSS is about 1.3 x max_inflight_bytes + 2 x
# max_message_bytes + 30 MB; without the budget this took 1,549 MB
PEAK_LIMIT_MB = 1.5 * BUDGET_MB + 2 * MAX_MESSAGE_MB + 50


def message(upload, seq):
    items = [embedding_pb2.Embedding(
        document_id=f"u{upload}-m{seq}-r{r}", chunk_index=0, content=CONTENT,
        vector=[0.5] * DIM, model="m") for r in range(ROWS)]
    return embedding_pb2.EmbeddingChunk(items=items, seq=seq)


def under_asan(pid):
    with open(f"/proc/{pid}/maps") as f:
        return "libasan" in f.read()


def test_big_messages_into_locked_table(embedflow, db, schema, monkeypatch):
    # Under AddressSanitizer freed memory sits in a quarantine instead of
    # being reused: turn that off (its shadow memory still adds some)
    monkeypatch.setenv("ASAN_OPTIONS", os.environ.get("ASAN_OPTIONS", "")
                       + ":quarantine_size_mb=0"
                       ":thread_local_quarantine_size_kb=0")
    ef = embedflow(dim=DIM, extra=[
        "--max_inflight_bytes", f"{BUDGET_MB}M",
        "--actors.grpc-receiver.max_message_bytes", f"{MAX_MESSAGE_MB}M",
        "--actors.splitter.max_content_bytes", "1M",
        # eight Python threads build and send 60 MB messages: on a busy
        # machine one can take longer than the default 10 s to deliver
        # its first; ending idle calls is test_idle_streams' subject
        "--actors.grpc-receiver.first_message_timeout", "120s"])
    wait_until("the writers' tables", lambda: db.rows(
        "SELECT 1 FROM pg_tables WHERE schemaname = %s "
        "AND tablename = 'chunk'", (schema,)))
    locker = psycopg2.connect(DATABASE)
    cur = locker.cursor()
    cur.execute(f'LOCK TABLE "{schema}".chunk IN ACCESS EXCLUSIVE MODE')
    results, errors = {}, {}
    sent = [0] * UPLOADS

    def counted(u):
        for seq in range(MESSAGES):
            m = message(u, seq)
            sent[u] += 1
            yield m

    def uploader(u):
        try:
            results[u] = send(ef.target, counted(u))
        except Exception as e:          # reported by the assertions below
            errors[u] = e

    threads = [threading.Thread(target=uploader, args=(u,))
               for u in range(UPLOADS)]
    base = proc_status_kb(ef.proc.pid, "VmHWM")
    for t in threads:
        t.start()
    try:
        # every upload has begun: the ones the budget holds back are
        # blocked by HTTP/2 flow control after their first message
        wait_until("every upload's first message", lambda: all(sent),
                   timeout=120)
        held = wait_for_stall(lambda: sum(sent))
        peak = proc_status_kb(ef.proc.pid, "VmHWM")
        print(f"peak RSS {peak / 1024:.0f} MB (at start {base / 1024:.0f} "
              f"MB), budget {BUDGET_MB} MB, {held} messages sent")
        assert held < UPLOADS * MESSAGES, "nothing held the clients back"
        limit = PEAK_LIMIT_MB * (2 if under_asan(ef.proc.pid) else 1)
        assert peak < limit * 1024, \
            f"peak RSS {peak} kB over {limit} MB"
    finally:
        locker.commit()
        locker.close()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert all(r.written == ROWS * MESSAGES for r in results.values())
    assert db.count(schema, "chunk") == UPLOADS * MESSAGES * ROWS


def test_budget_comes_back_whatever_the_client_numbers(embedflow, db, schema):
    """Chunks without seq (all 0, proto3's default) and a document sent
    again in a later chunk: the upload is counted right and every byte
    it was charged is given back once it is over."""
    ef = embedflow(dim=DIM, extra=["--metrics", "127.0.0.1:0"])
    base = ef.wait_for_line(r"metrics on (http://\S+:\d+)/metrics").group(1)
    chunks = [embedding_pb2.EmbeddingChunk(items=[
        embedding_pb2.Embedding(document_id=f"d{(c * 10 + r) % 35}",
                                chunk_index=0, content=f"v{c}",
                                vector=[0.5] * DIM, model="m")
        for r in range(10)]) for c in range(5)]
    result = send(ef.target, chunks)
    assert (result.received, result.written) == (50, 50)
    assert db.count(schema, "chunk") == 35
    assert wait_until("the budget given back", lambda: scrape(base).get(
        "embedflow_inflight_bytes") == 0, timeout=30)
