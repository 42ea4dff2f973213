"""The tcp links of a split process, watched from outside on loopback:
acks that do not carry their stream's random key settle nothing, and the
link peers (connected, gone, back) show in metrics, the log and /readyz.
The test process plays the writer host: it binds the writer's batches
port and connects to the ingest process's acks port."""
import concurrent.futures
import socket
import time

import pytest

from conftest import DATABASE, Embedflow, clean_env
from helpers import readyz, scrape, send, stream, wait_until

zmq = pytest.importorskip("zmq")
from embedflow.v1 import pipeline_pb2  # noqa: E402

DIM = 8


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ingest(schema):
    """An ingest-only process (receiver, splitter, one writer elsewhere)
    whose links are loopback tcp; yields (process, ports, metrics URL)."""
    ports = {name: free_port() for name in
             ("batches", "acks", "pull-acks", "dead", "metrics")}
    args = ["run", "--database", DATABASE, "--schema", schema,
            "--listen", "127.0.0.1:0", "--dim", str(DIM), "--writers", "1",
            "--run", "grpc-receiver,scheduler,grpc-puller,splitter",
            "--metrics", f"127.0.0.1:{ports['metrics']}",
            "--actors.splitter.linger", "1ms"]
    for link in ("batches", "acks", "pull-acks", "dead"):
        args += [f"--links.{link}.endpoint",
                 f"tcp://127.0.0.1:{ports[link]}"]
    ef = Embedflow(args).wait_ready()
    yield ef, ports, f"http://127.0.0.1:{ports['metrics']}"
    assert ef.stop() == 0, ef.log


def ack(stream_id, rows, key=None):
    """An Ack for rows (Row messages), a tally per chunk and attempt, as
    a writer sends it, naming stream_id and carrying key."""
    chunks = {}
    for r in rows:
        chunks[(r.chunk_seq, r.attempt)] = \
            chunks.get((r.chunk_seq, r.attempt), 0) + r.covers
    tallies = []
    for (seq, attempt), written in sorted(chunks.items()):
        tally = pipeline_pb2.StreamTally(stream_id=stream_id, written=written,
                                         chunk_seq=seq, attempt=attempt)
        if key is not None:
            tally.stream_key = key
        tallies.append(tally)
    return pipeline_pb2.Ack(tallies=tallies,
                            **{"from": "forger"}).SerializeToString()


def test_forged_acks_settle_nothing(ingest):
    ef, ports, base = ingest
    unknown = 'embedflow_acks_unknown_total{link="acks"}'
    assert scrape(base)[unknown] == 0
    ctx = zmq.Context()
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        writer = ctx.socket(zmq.PULL)
        writer.linger = 0
        writer.bind(f"tcp://127.0.0.1:{ports['batches']}")
        acks = ctx.socket(zmq.PUSH)
        acks.linger = 0
        acks.connect(f"tcp://127.0.0.1:{ports['acks']}")

        rows = 50
        upload = pool.submit(send, ef.target, stream(rows, DIM, 10), timeout=60)
        got = []
        while sum(r.covers for r in got) < rows:
            assert writer.poll(30000), ef.log
            got += pipeline_pb2.RowBatch.FromString(writer.recv()).rows
        ids = {(r.stream_id, r.stream_key) for r in got}
        assert len(ids) == 1
        stream_id, key = ids.pop()
        assert len(key) == 16

        # the observed id, without its key, with a wrong one, and a guess
        wrong = bytes(b ^ 0xFF for b in key)
        for forged in (ack(stream_id, got), ack(stream_id, got, wrong),
                       ack(stream_id + 1, got, key)):
            acks.send(forged)
        forged_tallies = 3 * len({r.chunk_seq for r in got})
        wait_until("the forged acks counted",
                 lambda: scrape(base).get(unknown, 0) >= forged_tallies)
        assert not upload.done()
        ef.wait_for_line(r"links\.acks: dropped an ack from forger for "
                         rf"stream {stream_id} .*wrong key")

        # the real key settles it
        acks.send(ack(stream_id, got, key))
        result = upload.result(60)
        assert (result.received, result.written) == (rows, rows)
        assert scrape(base)[unknown] == forged_tallies
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        ctx.destroy(linger=0)


def test_writer_gone_and_back(schema, db):
    """A real writer process on loopback tcp: stopped, the ingest process
    warns, its peers gauge drops and /readyz fails once peer_timeout has
    passed; started again, all of it recovers and uploads flow."""
    ports = {name: free_port() for name in
             ("batches", "acks", "pull-acks", "dead", "metrics")}
    links = []
    for link in ("batches", "acks", "pull-acks", "dead"):
        links += [f"--links.{link}.endpoint",
                  f"tcp://127.0.0.1:{ports[link]}",
                  f"--links.{link}.peer_timeout", "2s"]
    common = ["run", "--database", DATABASE, "--schema", schema,
              "--dim", str(DIM), "--writers", "1", *links]
    writer_args = common + ["--run", "db-writer,dlq,cache-invalidator"]

    def start_writer():
        w = Embedflow(writer_args, env=clean_env())
        w.wait_for_line(r"embedflow: ready")
        return w

    writer = start_writer()
    ingest = Embedflow(common + [
        "--run", "grpc-receiver,scheduler,grpc-puller,splitter",
        "--listen", "127.0.0.1:0",
        "--metrics", f"127.0.0.1:{ports['metrics']}"]).wait_ready()
    base = f"http://127.0.0.1:{ports['metrics']}"
    batches = ("embedflow_link_peers{link=\"batches\",endpoint="
               f"\"tcp://127.0.0.1:{ports['batches']}\"}}")
    acks = ("embedflow_link_peers{link=\"acks\",endpoint="
            f"\"tcp://127.0.0.1:{ports['acks']}\"}}")
    try:
        # acks: the writer and the DLQ each connect
        wait_until("both links up", lambda: scrape(base).get(batches) == 1
                 and scrape(base).get(acks) == 2)
        wait_until("ready", lambda: readyz(base)[0] == 200)

        mark = len(ingest.lines)
        assert writer.stop() == 0, writer.log
        ingest.wait_for_line(r"links\.batches: lost the connection to "
                             rf"tcp://127\.0\.0\.1:{ports['batches']}",
                             after=mark)
        gone = time.monotonic()
        ingest.wait_for_line(r"links\.acks: the last peer connected to "
                             rf"tcp://127\.0\.0\.1:{ports['acks']} is gone",
                             after=mark)
        sample = scrape(base)
        assert sample[batches] == 0 and sample[acks] == 0
        status, text = wait_until("/readyz failing",
                                lambda: (lambda r: r if r[0] == 503
                                         else None)(readyz(base)))
        assert time.monotonic() - gone >= 1.5
        assert f"links.batches: no peer at tcp://127.0.0.1:{ports['batches']}" \
            in text, text

        writer = start_writer()
        ingest.wait_for_line(r"links\.batches: connected to "
                             rf"tcp://127\.0\.0\.1:{ports['batches']} again",
                             after=mark)
        wait_until("both links back", lambda: scrape(base).get(batches) == 1
                 and scrape(base).get(acks) == 2)
        wait_until("ready again", lambda: readyz(base)[0] == 200)
        result = send(ingest.target, stream(100, DIM, 10, doc_prefix="back"))
        assert (result.received, result.written) == (100, 100)
        assert db.count(schema, "chunk") == 100
    finally:
        for ef in (ingest, writer):
            assert ef.stop() == 0, ef.log
