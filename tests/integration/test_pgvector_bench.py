"""`embedflow bench` with an ANN index, on a PostgreSQL that has pgvector
(tests/pgvector.sh; skipped with its message when there is none): the
three contenders of loading into an indexed table (through-index,
load-then-build, embedflow) each load every row, through-index writes
into a table that has its index the whole load, load-then-build into
one that gets it afterwards, and the table, JSON and plot carry the
time until searchable and the query latencies (small sizes: no speed
asserted)."""
import json
import os
import shutil
import subprocess

import pytest

from conftest import EMBEDFLOW_BIN, Database, clean_env
from helpers import private_data_dir
from pgvector_server import PGV_DIR, pgvector_database

PGV = pgvector_database()
CONTENDERS = ["through-index", "load-then-build", "embedflow"]
SCHEMAS = {"through-index": "embedflow_bench_through_index",
           "load-then-build": "embedflow_bench_load_then_build",
           "embedflow": "embedflow_bench_pipeline"}
FIELDS = {"rows", "load_s", "rows_per_s", "build_s", "searchable_s",
          "indexed_s", "settled_s", "unindexed_at_commit", "indexed_at_start",
          "indexed_at_commit", "queries_during", "query_during_p50_s",
          "query_during_p95_s", "queries_at_rest", "query_at_rest_p50_s",
          "query_at_rest_p95_s", "recall_at_10"}


def bench(*args, timeout=300):
    """Runs `embedflow bench ARGS` and returns the finished process."""
    return subprocess.run(
        [EMBEDFLOW_BIN, "bench", *args], stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=timeout, env=clean_env())


@pytest.fixture
def pdb():
    database = Database(PGV)
    database.rows("CREATE EXTENSION IF NOT EXISTS vector")
    yield database
    for schema in SCHEMAS.values():
        database.rows(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    database.close()


def ann_index(db, schema):
    """(access method, operator class) of the schema's ANN index, or
    None."""
    rows = db.rows(
        "SELECT am.amname, opc.opcname FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_am am ON am.oid = c.relam "
        "JOIN pg_opclass opc ON opc.oid = i.indclass[0] "
        "WHERE i.indrelid = %s::regclass "
        "AND am.amname IN ('hnsw', 'ivfflat')",
        (f"{schema}.embedding",))
    return tuple(rows[0]) if rows else None


@pytest.mark.parametrize("vector_type,metric,operator", [
    ("vector", "cosine", "<=>"),
    ("halfvec", "l2", "<->"),
])
def test_bench_loads_into_an_indexed_table_three_ways(pdb, tmp_path,
                                                      vector_type, metric,
                                                      operator):
    out = tmp_path / "bench.json"
    png = tmp_path / "bench.png"
    plot = ["--plot", str(png)] if shutil.which("gnuplot") else []
    p = bench(
        "--database", PGV, "--rows", "2000",
        "--dim", "64", "--runs", "1", "--writers", "2", "--batch-rows",
        "250", "--vector_type", vector_type, "--index.method", "hnsw",
        "--index.metric", metric, "--index.build_memory", "64M",
        # embedflow's segments sealed small and soon, so it indexes all
        # within the test
        "--index.seal_rows", "500", "--index.seal_idle", "500ms",
        # ... and merged down to two before the queries at rest
        "--index.max_segments", "2",
        "--queries", "30", "--json", str(out), *plot, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    for name in CONTENDERS:
        assert any(line.split()[:2] == ["2", name] for line in lines), \
            p.stdout
    assert "targets: embedflow searchable" in p.stdout
    assert f"ORDER BY vector {operator} $1 LIMIT 10" in p.stdout
    assert "maintenance_work_mem 64 MB" in p.stdout

    doc = json.loads(out.read_text())
    assert doc["params"]["index"] == \
        f"hnsw {metric} m=16 ef_construction=64"
    assert doc["params"]["build_memory_bytes"] == 64 << 20
    assert [(r["contender"], r["writers"]) for r in doc["results"]] == \
        [(c, 2) for c in CONTENDERS]
    got = {r["contender"]: r for r in doc["results"]}
    for name, r in got.items():
        for m in [r["median"]] + r["runs"]:
            assert set(m) == FIELDS, m
            assert m["rows"] == 2000, (name, m)
            assert m["searchable_s"] >= m["load_s"] > 0, (name, m)
            assert m["indexed_s"] >= m["searchable_s"], (name, m)
            assert m["settled_s"] >= m["indexed_s"], (name, m)
            assert m["queries_during"] > 0, (name, m)
            assert m["queries_at_rest"] == 30, (name, m)
            assert 0 < m["query_at_rest_p50_s"] <= m["query_at_rest_p95_s"]
            assert 0 <= m["recall_at_10"] <= 1, (name, m)
        assert pdb.count(SCHEMAS[name], "embedding") == 2000, name
        assert pdb.count(SCHEMAS[name], "chunk") == 2000, name
        assert pdb.scalar(
            "SELECT format_type (atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attname = 'vector'",
            (f"{SCHEMAS[name]}.embedding",)) == f"{vector_type}(64)"
    through = got["through-index"]["median"]
    # every row went in through the index: it was there from the first
    # row to the last commit
    assert through["indexed_at_start"] and through["indexed_at_commit"]
    assert through["build_s"] == 0
    assert through["searchable_s"] == through["load_s"]
    build = got["load-then-build"]["median"]
    assert not build["indexed_at_start"] and not build["indexed_at_commit"]
    assert build["build_s"] > 0
    assert build["searchable_s"] == pytest.approx(
        build["load_s"] + build["build_s"], abs=0.002)
    emb = got["embedflow"]["median"]
    assert 0 <= emb["unindexed_at_commit"] <= 2000
    # at rest once merges left index.max_segments sealed segments
    assert emb["settled_s"] >= emb["indexed_s"]
    assert pdb.scalar(
        "SELECT count(*) FROM embedflow_bench_pipeline.segment "
        "WHERE state = 'sealed'") <= 2
    assert pdb.scalar(
        "SELECT max (rows) FROM embedflow_bench_pipeline.segment "
        "WHERE state = 'sealed'") > 500
    assert doc["params"]["searchable_rows"] == 500
    # both baselines end with the configured index
    for name in ("through-index", "load-then-build"):
        assert ann_index(pdb, SCHEMAS[name]) == \
            ("hnsw", f"{vector_type}_{metric}_ops"), name
    targets = doc["targets"]
    assert [t["writers"] for t in targets] == [2]
    assert set(targets[0]) == {"writers", "searchable_vs_through_index",
                               "searchable_vs_load_then_build",
                               "p95_during_vs_rest",
                               "through_index_p95_during_vs_rest"}
    assert targets[0]["searchable_vs_through_index"] > 0
    # the baseline's own ratio, beside the goal: what the machine does
    # to queries during a load without an exact scan
    through = doc["results"][0]["median"]
    assert doc["results"][0]["contender"] == "through-index"
    assert targets[0]["through_index_p95_during_vs_rest"] == pytest.approx(
        through["query_during_p95_s"] / through["query_at_rest_p95_s"],
        abs=1e-3)
    assert "(through-index's own query p95 during: " in p.stdout
    if plot:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plot: {png}" in p.stdout


def test_bench_measures_only_the_contenders_named(pdb, tmp_path):
    out = tmp_path / "bench.json"
    # quotes in the paths, which gnuplot's script must carry whole
    log = tmp_path / "it's" / "queries.tsv"
    png = tmp_path / "it's" / "bench.png"
    log.parent.mkdir()
    plot = ["--plot", str(png)] if shutil.which("gnuplot") else []
    p = bench(
        "--database", PGV, "--rows", "600",
        "--dim", "16", "--runs", "1", "--writers", "1", "--index.method",
        "hnsw", "--index.seal_rows", "200", "--index.seal_idle", "300ms",
        "--queries", "5", "--contenders", "embedflow", "--json", str(out),
        "--query-log", str(log), *plot)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = [line.split()[1] for line in p.stdout.splitlines()
            if line.split()[:1] == ["1"]]
    assert rows == ["embedflow"], p.stdout
    # the targets compare all three: not printed without them
    assert "targets:" not in p.stdout
    doc = json.loads(out.read_text())
    assert [r["contender"] for r in doc["results"]] == ["embedflow"]
    assert doc["targets"] == []
    for name in ("through-index", "load-then-build"):
        assert pdb.scalar("SELECT to_regclass (%s) IS NULL",
                          (f"{SCHEMAS[name]}.chunk",)), name

    # the query log: one line per query the figures were taken from, in
    # the order sent
    header, *lines = log.read_text().splitlines()
    assert header.split("\t") == ["contender", "writers", "run", "phase",
                                  "started_s", "latency_ms"]
    queries = [line.split("\t") for line in lines]
    assert {tuple(q[:3]) for q in queries} == {("embedflow", "1", "1")}
    phases = [q[3] for q in queries]
    emb = doc["results"][0]["median"]
    assert phases == ["during"] * emb["queries_during"] + ["rest"] * 5
    started = [float(q[4]) for q in queries]
    assert started == sorted(started) and started[0] >= 0
    latency = sorted(float(q[5]) for q in queries if q[3] == "rest")
    assert all(ms > 0 for ms in latency)
    # nearest rank, as the JSON's percentile
    assert latency[2] == pytest.approx(
        emb["query_at_rest_p50_s"] * 1e3, abs=0.002)
    if plot:
        # a third panel, the latencies against time, widens the picture
        head = png.read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        assert int.from_bytes(head[16:20], "big") == 1800

    bad = bench(
        "--database", PGV, "--index.method", "hnsw",
        "--contenders", "embedflow,through", timeout=60)
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert "--contenders must be a list of through-index, load-then-build " \
        "and embedflow" in bad.stderr

    # without an index no query runs, so there is nothing to log
    bad = bench(
        "--database", PGV, "--index.method", "none",
        "--query-log", str(tmp_path / "none.tsv"), timeout=60)
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert "--query-log needs an index" in bad.stderr
    assert not (tmp_path / "none.tsv").exists()

    # a log that cannot be written stops the bench before it loads
    bad = bench(
        "--database", PGV, "--rows", "600",
        "--dim", "16", "--runs", "1", "--writers", "1", "--index.method",
        "hnsw", "--contenders", "embedflow",
        "--query-log", str(tmp_path / "missing" / "q.tsv"), timeout=60)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"--query-log {tmp_path / 'missing' / 'q.tsv'}: No such file " \
        "or directory" in bad.stderr
    assert "embedflow_bench_pipeline" not in bad.stdout


def test_bench_vectors_are_clustered_unless_told(pdb, tmp_path):
    """The bench's rows are drawn like embeddings, which an ANN index
    can find; --vectors uniform draws the noise of the runs before, where
    it finds less, and the report and JSON say which was drawn (a
    --vectors of another kind: test_bench.py)."""
    recall = {}
    for kind in ("clustered", "uniform"):
        out = tmp_path / f"{kind}.json"
        flags = [] if kind == "clustered" else ["--vectors", kind]
        p = bench(
            "--database", PGV, "--rows", "4000",
            "--dim", "256", "--runs", "1", "--writers", "1",
            "--index.method", "hnsw", "--queries", "50",
            "--contenders", "load-then-build", "--json", str(out), *flags)
        assert p.returncode == 0, p.stdout + p.stderr
        assert f"4000 rows x 256 dims ({kind} vectors)" in p.stdout, p.stdout
        doc = json.loads(out.read_text())
        assert doc["params"]["vectors"] == kind
        recall[kind] = doc["results"][0]["median"]["recall_at_10"]
    # measured: 0.99 and 0.62
    assert recall["clustered"] >= 0.9, recall
    assert recall["uniform"] < recall["clustered"] - 0.05, recall


@pytest.fixture
def data_dir():
    yield from private_data_dir()


def test_private_server_runs_the_path_build_of_its_version(data_dir):
    """A private cluster made by the system's PostgreSQL is started by a
    build of the same major version first on PATH (one with pgvector),
    so `bench --index.method` works on it without --database."""
    bindir = open(os.path.join(PGV_DIR, "bindir")).read().strip()
    major = os.path.basename(os.path.dirname(bindir))
    system = f"/usr/lib/postgresql/{major}/bin"
    if not os.path.exists(os.path.join(system, "postgres")) or \
            os.path.realpath(system) == os.path.realpath(bindir):
        pytest.skip(f"no system PostgreSQL in {system} besides {bindir}")
    plain = "/usr/local/bin:/usr/bin:/bin"
    p = subprocess.run(
        [EMBEDFLOW_BIN, "demo", "--data-dir", data_dir, "--rows", "10",
         "--dim", "8"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=300, env=clean_env(PATH=plain))
    assert p.returncode == 0, p.stdout + p.stderr
    p = subprocess.run(
        [EMBEDFLOW_BIN, "bench", "--data-dir", data_dir, "--rows", "200",
         "--dim", "16", "--runs", "1", "--writers", "1", "--queries", "5",
         "--index.seal_idle", "500ms",
         "--vector_type", "vector", "--index.method", "hnsw"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=300, env=clean_env(PATH=f"{bindir}:{plain}"))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "targets: embedflow searchable" in p.stdout
