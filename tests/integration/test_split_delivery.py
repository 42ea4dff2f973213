"""Delivery across hosts survives a lost writer host: an ingest host
(gRPC, splitter) and a writer host (writers, DLQ) in network namespaces.
The writer host is killed with SIGKILL in the middle of an upload: when
it comes back, the ingest host sends what was not settled again and the
upload ends OK with the exact row set, without the client sending
anything again; when it never comes back, the upload ends UNAVAILABLE
within delivery_timeout, naming the link."""
import re
import signal
import time

import grpc
import pytest

import netns
from conftest import DATABASE, Embedflow, clean_env
from helpers import BackgroundUpload, scrape, stream, wait_until
from pullhelp import AiServer, runs

reason = netns.skip_reason()
if reason:
    pytest.skip(reason, allow_module_level=True)

ROWS = 30000
DIM = 16
CHUNK_ROWS = 100
WRITERS = 2


def config(path, ingest, writer, run, schema, delivery_timeout, extra=(),
           tail=()):
    """Links across the namespaces without keys: `insecure: true`, since
    this test is about delivery (test_split_netns covers CURVE)."""
    links = {"batches": f"tcp://{writer.addr}:7100",
             "dead": f"tcp://{writer.addr}:7090",
             "acks": f"tcp://{ingest.addr}:7080",
             "pull-acks": f"tcp://{ingest.addr}:7081"}
    lines = [f"dim: {DIM}", f"schema: {schema}", f'database: "{DATABASE}"',
             f"run: [{', '.join(run)}]", "drain_timeout: 5s",
             "actors:",
             '  grpc-receiver: { listen: "0.0.0.0:50051", '
             f'delivery_timeout: {delivery_timeout} }}',
             f"  db-writer: {{ instances: {WRITERS} }}",
             "  splitter: { batch_rows: 200 }",
             *extra,
             "links:"]
    for name, ep in links.items():
        port = ep.rsplit(":", 1)[1]
        lines.append(f'  {name}: {{ endpoint: "{ep}", bind: "tcp://*:{port}",'
                     f" insecure: true }}")
    path.write_text("\n".join(lines + list(tail)) + "\n")
    return path


class Split:
    """The two hosts and their processes."""

    def __init__(self, net, tmp_path, schema, delivery_timeout,
                 ingest_actors=(), ingest_tail=()):
        self.net = net
        self.ingest = net.host("ingest", 1)
        self.writer = net.host("writer", 20)
        self.wcfg = config(tmp_path / "writer.yaml", self.ingest, self.writer,
                           ["db-writer", "dlq", "cache-invalidator"], schema,
                           delivery_timeout)
        self.icfg = config(tmp_path / "ingest.yaml", self.ingest, self.writer,
                           ["grpc-receiver", "scheduler", "grpc-puller",
                            "splitter"], schema, delivery_timeout,
                           ingest_actors, ingest_tail)
        self.wef = self.start(self.writer, self.wcfg)
        self.metrics = f"http://{self.ingest.addr}:9464"
        self.ief = self.start(self.ingest, self.icfg, "--metrics",
                              f"{self.ingest.addr}:9464")
        self.target = f"{self.ingest.addr}:50051"

    def start(self, host, cfg, *extra):
        ef = Embedflow(["run", "--config", str(cfg), *extra],
                       prefix=host.command([]), env=clean_env())
        self.net.processes.append(ef.proc)
        ef.wait_for_line(r"embedflow: ready", timeout=60)
        return ef

    def kill_writer(self):
        self.wef.proc.send_signal(signal.SIGKILL)
        self.wef.proc.wait(30)


@pytest.fixture
def split(request, tmp_path, schema, db):
    """The two hosts; a test marked delivery_timeout(T) sets the ingest
    host's delivery_timeout (default 60s)."""
    mark = request.node.get_closest_marker("delivery_timeout")
    with netns.Network() as net:
        s = Split(net, tmp_path, schema, mark.args[0] if mark else "60s")
        yield s


def count(db, schema):
    return db.scalar(f'SELECT count(*) FROM "{schema}".chunk')


def test_writer_host_killed_and_back(split, db, schema):
    chunks = stream(ROWS, DIM, CHUNK_ROWS, doc_prefix="d")
    up = BackgroundUpload(split.target, chunks)
    # mid-upload: some rows are committed, most are not
    wait_until("a fifth of the rows", lambda: count(db, schema) >= ROWS // 5)
    split.kill_writer()
    split.ief.wait_for_line(r"links\.\S+: (lost the connection to |the last "
                            r"peer connected to )")
    # what waits for the writer host is visible meanwhile
    wait_until("unsettled chunks shown", lambda: scrape(split.metrics).get(
        "embedflow_receiver_unsettled_chunks", 0) > 0)
    assert scrape(split.metrics)["embedflow_receiver_unsettled_bytes"] > 0
    split.wef = split.start(split.writer, split.wcfg)
    up.finish(db, schema)
    split.ief.wait_for_line(r"sending \d+ unsettled chunk\(s\) again")
    assert scrape(split.metrics)["embedflow_receiver_resent_chunks_total"] > 0
    wait_until("nothing unsettled", lambda: scrape(split.metrics)[
        "embedflow_receiver_unsettled_chunks"] == 0)
    assert db.scalar(f'SELECT count(*) FROM "{schema}".embedding') == ROWS
    assert db.scalar(f'SELECT count(*) FROM "{schema}".dead_letter') == 0


def test_link_down_ten_seconds(split, db, schema):
    chunks = stream(ROWS, DIM, CHUNK_ROWS, doc_prefix="l")
    up = BackgroundUpload(split.target, chunks)
    wait_until("a fifth of the rows", lambda: count(db, schema) >= ROWS // 5)
    split.net.set_link(split.writer, False)
    try:
        time.sleep(10)          # the fault: ten seconds without a cable
    finally:
        split.net.set_link(split.writer, True)
    up.finish(db, schema)


@pytest.mark.delivery_timeout("5s")
def test_writer_host_never_back(split, db, schema):
    chunks = stream(ROWS, DIM, CHUNK_ROWS, doc_prefix="n")
    up = BackgroundUpload(split.target, chunks)
    wait_until("a fifth of the rows", lambda: count(db, schema) >= ROWS // 5)
    split.kill_writer()
    err = up.wait(60)
    assert err is not None, up.outcome
    assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
    assert "delivery_timeout" in err.details()
    assert f"{split.writer.addr}:" in err.details(), err.details()
    # SIGTERM with the writer host still gone: the drain ends within
    # drain_timeout (5 s), failing what cannot finish. Batches for the
    # missing writer are either held by the splitter (the link was full)
    # and dropped with a log line, or still queued in the link's socket
    # and dropped when it closes: their upload was answered UNAVAILABLE
    # either way. What still waits for the writer is stopped at
    # drain_timeout with exit 1.
    started = time.monotonic()
    rc = split.ief.stop(timeout=60)
    assert time.monotonic() - started < 30
    log = split.ief.log
    assert rc == 0 or ("drain_timeout (5000 ms) passed" in log and rc == 1), log
    assert "held for writer" not in log or rc == 0, log


def test_pull_run_fails_when_its_rows_are_lost(tmp_path, schema, db):
    """The ingest host pulls from an AI server; the writer host is killed
    during the run and does not come back. Pulled rows are not sent again:
    the run fails once no ack came for the job's idle_timeout, saying
    which link lost its peer, and the next run resumes from the
    checkpoint (which only committed rows moved)."""
    with netns.Network() as net:
        server = AiServer(20000, DIM, extra=["--host", net.gateway,
                                             "--delay-ms", "20"])
        try:
            target = f"{net.gateway}:{server.port}"
            split = Split(
                net, tmp_path, schema, "60s",
                ingest_actors=["  scheduler: { run_now: src }"],
                ingest_tail=[f'jobs: {{ src: {{ target: "{target}", '
                             'source: src, idle_timeout: 3s } }'])
            wait_until("pulled rows committed",
                       lambda: count(db, schema) >= 1000)
            split.kill_writer()
            split.ief.wait_for_line(
                r"job src run \S+ failed .*rows not settled for 3000 ms "
                r"\(idle_timeout\) after links\.\S+ tcp://"
                + re.escape(split.writer.addr), timeout=60)
            (run,) = runs(db, schema)
            assert run["status"] == "failed"
            assert "resumes from the checkpoint" in run["error"]
        finally:
            server.stop()
