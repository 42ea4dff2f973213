"""embedflow split over two hosts made of network namespaces, with CURVE
on every tcp link: an ingest host (gRPC, splitter) and a writer host
(writers, DLQ) next to the test PostgreSQL. The test process is a third
machine on the same network: the uploading client, and a foreign peer
without a key that pushes well-formed RowBatches to the writer's port and
forged Acks to the ingest host's acks port."""
import re
import time

import pytest

import netns
from conftest import DATABASE, Embedflow, clean_env
from helpers import scrape, send, stream

reason = netns.skip_reason()
if reason:
    pytest.skip(reason, allow_module_level=True)

zmq = pytest.importorskip("zmq")
from embedflow.v1 import pipeline_pb2  # noqa: E402

ROWS = 3000
DIM = 16
WRITERS = 2


def keygen(path):
    out = Embedflow(["keygen", str(path)])
    assert out.proc.wait(30) == 0, out.log
    text = path.read_text()
    return re.search(r'public-key = "(.{40})"', text).group(1)


def config(path, keys, ingest, writer, run, schema):
    links = {"batches": ("tcp://{w}:7100", "writer"),
             "dead": ("tcp://{w}:7090", "writer"),
             "acks": ("tcp://{i}:7080", "ingest"),
             "pull-acks": ("tcp://{i}:7081", "ingest")}
    me = "ingest" if "splitter" in run else "writer"
    lines = [f"dim: {DIM}", f"schema: {schema}", f'database: "{DATABASE}"',
             f"run: [{', '.join(run)}]",
             f"curve: {{ key: {keys}/{me}.key_secret, "
             f"clients: {keys}/{me}-clients }}",
             "actors:",
             '  grpc-receiver: { listen: "0.0.0.0:50051" }',
             f"  db-writer: {{ instances: {WRITERS} }}",
             "links:"]
    for name, (ep, owner) in links.items():
        ep = ep.format(w=writer.addr, i=ingest.addr)
        port = ep.rsplit(":", 1)[1]
        lines.append(f'  {name}: {{ endpoint: "{ep}", bind: "tcp://*:{port}",'
                     f' server_key: {keys}/{owner}.key }}')
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_metric(base, key, at_least, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        value = scrape(base).get(key, 0)
        if value >= at_least or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def foreign_sockets(ctx, endpoint, server_key):
    """A PUSH without CURVE and a PUSH with CURVE but a key nobody
    allowed, both connected to endpoint."""
    plain = ctx.socket(zmq.PUSH)
    curve = ctx.socket(zmq.PUSH)
    curve.curve_publickey, curve.curve_secretkey = zmq.curve_keypair()
    curve.curve_serverkey = server_key.encode()
    for s in (plain, curve):
        s.linger = 0
        s.connect(endpoint)
    return plain, curve


@pytest.fixture
def hosts(tmp_path, schema, db):
    with netns.Network() as net:
        ingest = net.host("ingest", 1)
        writer = net.host("writer", 20)
        keys = tmp_path / "keys"
        (keys / "ingest-clients").mkdir(parents=True)
        (keys / "writer-clients").mkdir()
        pub = {h: keygen(keys / f"{h}.key") for h in ("ingest", "writer")}
        # each host allows the other's public key
        (keys / "writer-clients" / "ingest.key").write_text(
            (keys / "ingest.key").read_text())
        (keys / "ingest-clients" / "writer.key").write_text(
            (keys / "writer.key").read_text())
        wcfg = config(tmp_path / "writer.yaml", keys, ingest, writer,
                      ["db-writer", "dlq", "cache-invalidator"], schema)
        icfg = config(tmp_path / "ingest.yaml", keys, ingest, writer,
                      ["grpc-receiver", "scheduler", "grpc-puller",
                       "splitter"], schema)
        procs = []
        for host, cfg in ((writer, wcfg), (ingest, icfg)):
            ef = Embedflow(["run", "--config", str(cfg),
                            "--metrics", f"{host.addr}:9464"],
                           prefix=host.command([]), env=clean_env())
            procs.append(ef)
            net.processes.append(ef.proc)
            ef.wait_for_line(r"embedflow: ready", timeout=60)
        yield net, ingest, writer, pub, procs
        for ef in procs:
            assert ef.stop() == 0, ef.log


def test_curve_split_upload_and_foreign_peer(hosts, schema, db):
    net, ingest, writer, pub, (wef, ief) = hosts
    wmet = f"http://{writer.addr}:9464"
    imet = f"http://{ingest.addr}:9464"

    # A foreign machine without a key: RowBatches to writer 0's port,
    # forged Acks (tallies for every small stream id) to the acks port.
    batch = pipeline_pb2.RowBatch(batch_id=1, rows=[pipeline_pb2.Row(
        id=bytes(16), document_id=f"forged-{i}", chunk_index=0,
        content="x", metadata_json="{}", vector=[0.5] * DIM, model="m",
        source="forged", stream_id=1, covers=1) for i in range(10)])
    ack = pipeline_pb2.Ack(tallies=[pipeline_pb2.StreamTally(
        stream_id=s, written=1000) for s in range(1, 200)], **{"from": "x"})
    ctx = zmq.Context()
    try:
        sockets = []
        for endpoint, key, payload in (
                (f"tcp://{writer.addr}:7100", pub["writer"], batch),
                (f"tcp://{ingest.addr}:7080", pub["ingest"], ack)):
            for s in foreign_sockets(ctx, endpoint, key):
                s.send(payload.SerializeToString())
                sockets.append(s)
        for base, link in ((wmet, "batches"), (imet, "acks")):
            for why in ("key", "handshake"):
                key = (f'embedflow_link_rejected_peers_total{{link="{link}",'
                       f'reason="{why}"}}')
                assert wait_metric(base, key, 1) >= 1, (link, why, wef.log,
                                                        ief.log)
    finally:
        ctx.destroy(linger=0)
    wef.wait_for_line(r"links\.batches: refused the peer at "
                      + re.escape(net.gateway))
    ief.wait_for_line(r"links\.acks: refused the peer at "
                      + re.escape(net.gateway))
    # nothing reached an actor: no batch read by a writer, no ack by the
    # receiver, no row written
    w = scrape(wmet)
    i = scrape(imet)
    for n in range(WRITERS):
        assert w[f'embedflow_actor_messages_in_total{{actor="db-writer[{n}]"}}'] == 0
    assert i['embedflow_actor_messages_in_total{actor="grpc-receiver"}'] == 0
    assert db.scalar(f'SELECT count(*) FROM "{schema}".chunk') == 0

    # The real client through both hosts: the exact row set.
    result = send(f"{ingest.addr}:50051", stream(ROWS, DIM, 100,
                                                doc_prefix="split"))
    assert (result.received, result.written, result.dead_lettered) == (
        ROWS, ROWS, 0)
    got = set(db.rows(f'SELECT document_id, chunk_index FROM "{schema}".chunk'))
    want = {(f"split-{n // 10}", n % 10) for n in range(ROWS)}
    assert got == want
    assert db.scalar(f'SELECT count(*) FROM "{schema}".embedding') == ROWS
    assert scrape(imet)[
        'embedflow_actor_rows_out_total{actor="grpc-receiver"}'] == ROWS
