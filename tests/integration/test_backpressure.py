"""Backpressure: while the database cannot take rows, the gRPC client is
held back by flow control instead of embedflow buffering the stream."""
import threading

import psycopg2

from conftest import DATABASE
from helpers import (proc_status_kb, scrape, send, stream, wait_for_stall,
                     wait_until)

_METRICS = r"metrics on (http://\S+:\d+)/metrics"
DIM = 256
CHUNKS = 400
CHUNK_ROWS = 100


def _sum(samples, name, label):
    """Sum of the samples of name whose labels hold label."""
    return sum(v for k, v in samples.items()
               if k.startswith(name + "{") and label in k)


def test_blocked_database_holds_the_client(embedflow, db, schema):
    ef = embedflow(writers=1, dim=DIM,
                   extra=["--batch-rows", "100", "--metrics", "127.0.0.1:0"])
    base = ef.wait_for_line(_METRICS).group(1)
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
        # what an operator looks at first: where the pipeline waits
        before = scrape(base)
        assert _sum(before, "embedflow_link_blocked_seconds_total",
                    'link="batches"') > 0
        assert _sum(before, "embedflow_link_blocked_seconds_total",
                    'link="chunks"') > 0
        assert _sum(before, "embedflow_link_queued", 'link="batches"') > 0
        assert _sum(before, "embedflow_link_queued", 'link="chunks"') > 0
        # still stuck: the blocked time keeps growing while it waits
        was = _sum(before, "embedflow_link_blocked_seconds_total",
                   'link="chunks"')
        wait_until("blocked seconds to grow",
                   lambda: _sum(scrape(base),
                                "embedflow_link_blocked_seconds_total",
                                'link="chunks"') > was, timeout=20)
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


def test_idle_pipeline_shows_no_backpressure(embedflow):
    ef = embedflow(writers=1, dim=8, extra=["--metrics", "127.0.0.1:0"])
    base = ef.wait_for_line(_METRICS).group(1)
    r = send(ef.target, stream(200, 8, 50, doc_prefix="idle"))
    assert r.written == 200
    s = scrape(base)
    for link in ("chunks", "batches"):
        assert f'embedflow_link_queued{{link="{link}"}}' in s
        assert s[f'embedflow_link_queued{{link="{link}"}}'] == 0
    blocked = [k for k in s
               if k.startswith("embedflow_link_blocked_seconds_total")]
    assert blocked
    assert all(s[k] == 0 for k in blocked), \
        {k: s[k] for k in blocked if s[k]}
