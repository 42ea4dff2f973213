"""deploy/split/ as shipped, on three hosts made of network namespaces:
an ingest host and two writer hosts (writers 0-1 with the DLQ and the
cache invalidator, writers 2-3), placed by the shared cluster.yaml with
one endpoint pattern, CURVE keys on every link. Only addresses, key
paths, the database and the vector size are changed for the test. The
test process is the uploading client on the bridge."""
import pathlib
import re
import signal

import pytest

import netns
from conftest import DATABASE, Embedflow, clean_env
from helpers import BackgroundUpload, readyz, scrape, send, stream, wait_until

reason = netns.skip_reason()
if reason:
    pytest.skip(reason, allow_module_level=True)

SPLIT = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "split"
DIM = 16
HOSTS = {"ingest": ("ingest-host.yaml", 1), "writer-a": ("writer-a.yaml", 2),
         "writer-b": ("writer-b.yaml", 3)}


def keygen(path):
    out = Embedflow(["keygen", str(path)])
    assert out.proc.wait(30) == 0, out.log


class Cluster:
    def __init__(self, net, tmp, schema):
        self.net = net
        self.schema = schema
        self.hosts = {name: net.host(name, octet)
                      for name, (_, octet) in HOSTS.items()}
        keys = tmp / "keys"
        keys.mkdir()
        for name in HOSTS:
            keygen(keys / f"{name}.key")
        # who connects to whom, as cluster.yaml's comment says
        allowed = {"ingest": ["writer-a", "writer-b"],
                   "writer-a": ["ingest", "writer-b"],
                   "writer-b": ["ingest"]}
        text = (SPLIT / "cluster.yaml").read_text()
        for name, (_, octet) in HOSTS.items():
            text = text.replace(f"10.0.0.{octet},",
                                f"{self.hosts[name].addr},")
        text = text.replace("/etc/embedflow/keys", str(keys))
        text = re.sub(r"^database: .*$", f'database: "{DATABASE}"', text,
                      flags=re.M)
        assert "10.0.0." not in text.split("\nhosts:\n")[1]
        self.cluster = tmp / "cluster.yaml"
        self.cluster.write_text(text)
        self.files = {}
        for name, (file, _) in HOSTS.items():
            clients = keys / f"{name}-clients"
            clients.mkdir()
            for peer in allowed[name]:
                (clients / f"{peer}.key").write_text(
                    (keys / f"{peer}.key").read_text())
            own = (SPLIT / file).read_text()
            own = own.replace("/etc/embedflow/keys/clients", str(clients))
            own = own.replace("/etc/embedflow/keys", str(keys))
            self.files[name] = tmp / file
            self.files[name].write_text(own)
        self.procs = {}

    def metrics(self, name):
        return f"http://{self.hosts[name].addr}:9464"

    def start(self, name, *extra):
        host = self.hosts[name]
        ef = Embedflow(["run", "--config", str(self.cluster),
                        "--config", str(self.files[name]),
                        "--dim", str(DIM), "--schema", self.schema,
                        "--metrics", f"{host.addr}:9464", *extra],
                       prefix=host.command([]), env=clean_env())
        self.net.processes.append(ef.proc)
        self.procs[name] = ef
        ef.wait_for_line(r"embedflow: ready", timeout=60)
        return ef


@pytest.fixture
def cluster(tmp_path, schema, db):
    with netns.Network() as net:
        c = Cluster(net, tmp_path, schema)
        c.start("writer-a")
        c.start("writer-b")
        c.start("ingest", "--links.batches.peer_timeout", "2s")
        yield c
        for ef in c.procs.values():
            if ef.alive():
                assert ef.stop() == 0, ef.log


def test_three_hosts_as_shipped(cluster, schema, db):
    ingest = cluster.hosts["ingest"]
    rows = 4000
    result = send(f"{ingest.addr}:50051",
                  stream(rows, DIM, 100, doc_prefix="placed"))
    assert (result.received, result.written, result.dead_lettered) == (
        rows, rows, 0)
    got = db.rows(f'SELECT document_id, chunk_index FROM "{schema}".chunk')
    assert len(got) == rows
    assert set(got) == {(f"placed-{n // 10}", n % 10) for n in range(rows)}
    assert db.scalar(f'SELECT count(*) FROM "{schema}".embedding') == rows
    # the documents went to all four writers, each on its own host
    placed = {"writer-a": (0, 1), "writer-b": (2, 3)}
    total = 0
    for host, writers in placed.items():
        sample = scrape(cluster.metrics(host))
        for k in writers:
            n = sample[f'embedflow_actor_rows_out_total{{actor="db-writer[{k}]"}}']
            assert n > 0, (host, k)
            total += n
        for k in set(range(4)) - set(writers):
            assert f'embedflow_actor_rows_out_total{{actor="db-writer[{k}]"}}' \
                not in sample
    assert total == rows
    # the ingest host keeps its upload history in the same database
    assert db.scalar(f"SELECT status FROM \"{schema}\".job_run WHERE id = "
                     f"'{result.job_id}'") == "completed"


def test_writer_host_lost_and_back(cluster, schema, db):
    ingest = cluster.procs["ingest"]
    base = cluster.metrics("ingest")
    b = cluster.hosts["writer-b"].addr
    peers = [f'embedflow_link_peers{{link="batches",endpoint="tcp://{b}:{p}"}}'
             for p in (7102, 7103)]
    wait_until("ready", lambda: readyz(base)[0] == 200)
    # ready does not wait for peers (peer_timeout): a peer counts once its
    # handshake is done
    wait_until("both of writer-b's ends connected",
               lambda: all(scrape(base)[k] == 1 for k in peers))

    mark = len(ingest.lines)
    writer_b = cluster.procs["writer-b"]
    writer_b.send_signal(signal.SIGKILL)
    writer_b.proc.wait(30)
    writer_b.expect_exit = -9
    ingest.wait_for_line(rf"links\.batches: lost the connection to "
                         rf"tcp://{re.escape(b)}:7102", after=mark)
    wait_until("the peers gauge to drop",
             lambda: all(scrape(base)[k] == 0 for k in peers))
    # both of writer-b's ends went at once; each is named once it has been
    # without a peer for peer_timeout, one maybe a moment before the other
    status, text = wait_until("/readyz failing for both ends", lambda: (
        lambda r: r if r[0] == 503 and all(
            f"links.batches: no peer at tcp://{b}:{p}" in r[1]
            for p in (7102, 7103)) else None)(readyz(base)))

    cluster.procs.pop("writer-b")
    cluster.start("writer-b")
    ingest.wait_for_line(rf"links\.batches: connected to "
                         rf"tcp://{re.escape(b)}:7102 again", after=mark)
    wait_until("ready again", lambda: readyz(base)[0] == 200)
    result = send(f"{cluster.hosts['ingest'].addr}:50051",
                  stream(400, DIM, 100, doc_prefix="back"))
    assert (result.received, result.written) == (400, 400)


def test_one_writer_host_lost_the_other_keeps_committing(cluster, schema, db):
    """writer-b (writers 2 and 3) is killed in the middle of an upload:
    writer-a keeps committing its documents while the splitter holds
    writer-b's batches; once writer-b is back the upload ends OK with the
    exact row set, the client sending nothing again."""
    base = cluster.metrics("ingest")
    a_base = cluster.metrics("writer-a")
    b = cluster.hosts["writer-b"].addr
    peers = [f'embedflow_link_peers{{link="batches",endpoint="tcp://{b}:{p}"}}'
             for p in (7102, 7103)]
    wait_until("both of writer-b's ends connected",
               lambda: all(scrape(base).get(k) == 1 for k in peers))
    rows = 60000
    chunks = stream(rows, DIM, 100, doc_prefix="lost")
    # the rest of the upload waits until the splitter has seen writer-b
    # go: rows it routes before that vanish with the connection (they are
    # sent again later) instead of being held
    up = BackgroundUpload(f"{cluster.hosts['ingest'].addr}:50051", chunks,
                          hold_after=len(chunks) // 10)

    def written_by_a():
        sample = scrape(a_base)
        return sum(sample.get(
            f'embedflow_actor_rows_out_total{{actor="db-writer[{k}]"}}', 0)
            for k in (0, 1))

    wait_until("rows on both writer hosts",
               lambda: db.scalar(f'SELECT count(*) FROM "{schema}".chunk')
               >= rows // 20)
    writer_b = cluster.procs.pop("writer-b")
    writer_b.send_signal(signal.SIGKILL)
    writer_b.proc.wait(30)
    writer_b.expect_exit = -9
    wait_until("the splitter seeing writer-b gone",
               lambda: all(scrape(base).get(k) == 0 for k in peers))
    at_kill = written_by_a()
    up.release()
    # writer-a goes on: well past what it had when writer-b went, and
    # past what writer-b's queues take (4 batches of 1000 rows each), so
    # the splitter holds writer-b's batches
    wait_until("writer-a committing without writer-b",
               lambda: written_by_a() >= at_kill + 20000, timeout=60)
    wait_until("the splitter holding writer-b's batches", lambda: sum(
        scrape(base).get(f'embedflow_splitter_{what}{{writer="{w}"}}', 0)
        for what in ("held_bytes", "dropped_rows_total")
        for w in (2, 3)) > 0, timeout=60)
    cluster.start("writer-b")
    up.finish(db, schema)
