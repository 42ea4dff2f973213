"""`embedflow bench`: every baseline and the pipeline run, the table is
printed and the JSON holds every field (small sizes: no speed asserted)."""
import json
import shutil
import subprocess

import pytest

from conftest import DATABASE, EMBEDFLOW_BIN, clean_env

FIELDS = {"rows", "seconds", "rows_per_s", "mb_per_s", "ratio_copy",
          "ratio_staged", "latency_p50_s", "latency_p95_s", "latency_p99_s",
          "peak_rss_bytes", "cpu_self_s", "cpu_postgres_s"}
CONTENDERS = ["copy", "staged", "row", "embedflow", "embedflow pull"]
# the pull run also says what its built-in server spent and how many calls
PULL_FIELDS = FIELDS | {"server_encode_s", "calls"}


def bench(*args, timeout=600):
    return subprocess.run(
        [EMBEDFLOW_BIN, "bench", "--database", DATABASE, *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=timeout, env=clean_env())


def test_bench_runs_every_contender_and_writes_json(tmp_path, db):
    out = tmp_path / "bench.json"
    # a quote in the path, which gnuplot's script must carry whole
    png = tmp_path / "it's" / "bench.png"
    png.parent.mkdir()
    plot = ["--plot", str(png)] if shutil.which("gnuplot") else []
    p = bench("--rows", "2000", "--dim", "32", "--runs", "1",
              "--writers", "1,2", "--row-rows", "300", "--chunk-rows", "100",
              "--batch-rows", "500", "--upsert-ratio", "0.25",
              "--vector-type", "real", "--json", str(out), *plot)
    assert p.returncode == 0, p.stdout + p.stderr
    if plot:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plot: {png}" in p.stdout
    # the table: a line per writer count and contender, and the targets
    for w in ("1", "2"):
        for name in ("copy", "staged", "row*", "embedflow"):
            assert any(line.split()[:2] == [w, name]
                       for line in p.stdout.splitlines()), p.stdout
    assert p.stdout.count("targets: embedflow") == 2
    for w in ("1", "2"):
        assert any(line.split()[:3] == [w, "embedflow", "pull"]
                   for line in p.stdout.splitlines()), p.stdout
    # not a terminal: plain progress lines, no carriage returns
    assert "\r" not in p.stderr

    doc = json.loads(out.read_text())
    assert doc["params"]["rows"] == 2000
    assert doc["params"]["writers"] == [1, 2]
    assert doc["params"]["pull"] is True
    assert doc["command"].startswith("embedflow bench")
    results = doc["results"]
    assert [(r["contender"], r["writers"]) for r in results] == \
        [(c, w) for w in (1, 2) for c in CONTENDERS]
    for r in results:
        for m in [r["median"]] + r["runs"]:
            pull = r["contender"] == "embedflow pull"
            assert set(m) == (PULL_FIELDS if pull else FIELDS), m
            if pull:
                # one GetEmbeddings call carried every row
                assert m["calls"] == 1 and m["server_encode_s"] >= 0
            want = 300 if r["contender"] == "row" else 2000
            assert m["rows"] == want, r
            assert m["rows_per_s"] > 0 and m["seconds"] > 0
            assert m["peak_rss_bytes"] > 0
            assert 0 < m["latency_p50_s"] <= m["latency_p95_s"] \
                <= m["latency_p99_s"]
            # a local server: its processes' CPU is known
            assert m["cpu_postgres_s"] is not None
        assert len(r["runs"]) == 1
    by = {(r["contender"], r["writers"]): r["median"] for r in results}
    assert by[("copy", 1)]["ratio_copy"] == pytest.approx(1.0)
    assert by[("staged", 2)]["ratio_staged"] == pytest.approx(1.0)

    # every contender's rows are in its own schema, with its vector
    for schema, rows in (("embedflow_bench_copy", 2000),
                         ("embedflow_bench_staged", 2000),
                         ("embedflow_bench_row", 300),
                         ("embedflow_bench_pipeline", 2000),
                         ("embedflow_bench_pull", 2000)):
        assert db.count(schema, "chunk") == rows
        assert db.count(schema, "embedding") == rows
        assert db.scalar(f"SELECT count(*) FROM {schema}.embedding "
                         "WHERE cardinality(vector) = 32") == rows
    # the same rows in every schema: one document compared across them
    contents = {db.scalar(f"SELECT string_agg(content, '|' ORDER BY "
                          f"chunk_index) FROM {s}.chunk WHERE document_id "
                          "= 'doc-000003'")
                for s in ("embedflow_bench_copy", "embedflow_bench_staged",
                          "embedflow_bench_pipeline", "embedflow_bench_pull")}
    assert len(contents) == 1
    # the pre-existing quarter was updated, not duplicated or left stale
    for s in ("embedflow_bench_pipeline", "embedflow_bench_pull"):
        assert db.scalar(f"SELECT count(*) FROM {s}.chunk c "
                         "JOIN embedflow_bench_copy.chunk d USING "
                         "(document_id, chunk_index) "
                         "WHERE c.content_hash = d.content_hash") == 2000
    for s in ("embedflow_bench_copy", "embedflow_bench_staged",
              "embedflow_bench_row", "embedflow_bench_pipeline",
              "embedflow_bench_pull"):
        db.rows(f"DROP SCHEMA {s} CASCADE")


def test_bench_runs_no_job_but_its_own(db):
    # a job that would run at start and every second in `run`: the bench
    # runs only its own pull job, once per pull run
    p = bench("--rows", "500", "--dim", "8", "--runs", "1", "--writers", "1",
              "--row-rows", "50", "--jobs.other.target", "127.0.0.1:1",
              "--jobs.other.schedule", "* * * * * *",
              "--actors.scheduler.run_now", "other")
    assert p.returncode == 0, p.stdout + p.stderr
    assert any(line.split()[:3] == ["1", "embedflow", "pull"]
               for line in p.stdout.splitlines()), p.stdout
    for s in ("embedflow_bench_pipeline", "embedflow_bench_pull"):
        assert db.scalar(f"SELECT count(*) FROM {s}.job_run "
                         "WHERE job = 'other'") == 0
    assert db.rows("SELECT status, rows_written FROM "
                   "embedflow_bench_pull.job_run") == [("completed", 500)]
    for s in ("embedflow_bench_copy", "embedflow_bench_staged",
              "embedflow_bench_row", "embedflow_bench_pipeline",
              "embedflow_bench_pull"):
        db.rows(f"DROP SCHEMA {s} CASCADE")


def test_bench_rejects_bad_flags():
    for args, word in ((["--writers", "1,,2"], "--writers"),
                       (["--writers", "0"], "--writers"),
                       (["--rows", "-5"], "--rows"),
                       (["--upsert-ratio", "1.5"], "--upsert-ratio"),
                       (["--runs", "0"], "--runs"),
                       (["--index.method", "hnsw", "--upsert-ratio", "0.5"],
                        "--upsert-ratio"),
                       (["--searchable-rows", "0"], "--searchable-rows"),
                       (["--queries", "0"], "--queries"),
                       (["--plot", "a\nb.png"], "newline"),
                       (["--vectors", "gaussian"], "clustered or uniform")):
        p = bench(*args, timeout=30)
        assert p.returncode == 2, (args, p.stderr)
        assert word in p.stderr


def test_bench_with_an_index_needs_pgvector(db):
    # the test server has no pgvector: the vectors are real[], which no
    # ANN index covers, and the bench says so instead of measuring
    if db.scalar("SELECT count(*) FROM pg_available_extensions "
                 "WHERE name = 'vector'"):
        pytest.skip("this server has pgvector")
    p = bench("--rows", "100", "--dim", "8", "--runs", "1", "--writers", "1",
              "--index.method", "hnsw", timeout=120)
    try:
        assert p.returncode == 1, p.stdout + p.stderr
        assert "through-index: an ANN index needs pgvector" in p.stderr
        assert "targets:" not in p.stdout
    finally:
        db.rows("DROP SCHEMA IF EXISTS embedflow_bench_through_index "
                "CASCADE")


def test_bench_plot_without_gnuplot_says_so(tmp_path):
    env = clean_env(PATH="/nonexistent")
    p = subprocess.run(
        [EMBEDFLOW_BIN, "bench", "--database", DATABASE, "--rows", "200",
         "--dim", "8", "--runs", "1", "--writers", "1", "--row-rows", "50",
         "--no-pull", "--plot", str(tmp_path / "x.png")],
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=300, env=env)
    assert p.returncode == 0, p.stderr
    # --no-pull: the push pipeline only
    assert "1       embedflow " in p.stdout
    assert "embedflow pull" not in p.stdout
    assert "gnuplot is not available" in p.stderr
    assert not (tmp_path / "x.png").exists()


def test_bench_memory_mode_samples_rss(tmp_path, db):
    out = tmp_path / "memory.json"
    p = bench("--memory", "--rows", "20000", "--dim", "64", "--writers", "2",
              "--slow-ms", "2", "--json", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "peak RSS at 4000 rows" in p.stdout
    assert "peak RSS at 20000 rows" in p.stdout
    m = json.loads(out.read_text())["memory"]
    assert m["rows"] == m["rows_written"] == 20000
    assert m["mark_rows"] == 4000 and m["slow_ms"] == 2
    assert 0 < m["peak_rss_at_mark_bytes"] <= m["peak_rss_bytes"]
    assert m["samples"] > 0
    # the slowing trigger was in place for the run
    assert db.scalar("SELECT count(*) FROM pg_trigger WHERE tgname = "
                     "'bench_slow'") == 1
    assert db.count("embedflow_bench_pipeline", "chunk") == 20000
    db.rows("DROP SCHEMA embedflow_bench_pipeline CASCADE")


def test_bench_sweep_prints_the_best_configuration(tmp_path):
    out = tmp_path / "sweep.json"
    p = bench("--sweep", "100,400", "--rows", "1500", "--dim", "16",
              "--runs", "1", "--writers", "1,2", "--json", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads(out.read_text())
    got = [(s["writers"], s["batch_rows"]) for s in doc["sweep"]]
    assert got == [(1, 100), (1, 400), (2, 100), (2, 400)]
    assert all(s["rows_per_s"] > 0 for s in doc["sweep"])
    best = doc["best"]
    assert best["rows_per_s"] == max(s["rows_per_s"] for s in doc["sweep"])
    assert (f"best: --writers {best['writers']} --batch-rows "
            f"{best['batch_rows']}") in p.stdout
    assert f"batch_rows: {best['batch_rows']}" in p.stdout
    p = bench("--sweep", "100,,400", timeout=30)
    assert p.returncode == 2 and "--sweep" in p.stderr


def test_bench_target_uploads_to_a_running_pipeline(embedflow, db, schema):
    """--target: only the load generator, against an embedflow that runs
    elsewhere; its figure is taken once every row is acknowledged."""
    ef = embedflow(dim=16)
    p = subprocess.run(
        [EMBEDFLOW_BIN, "bench", "--target", ef.target, "--rows", "3000",
         "--dim", "16", "--chunk-rows", "100"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
        env=clean_env())
    assert p.returncode == 0, p.stderr
    line = json.loads(p.stdout.strip().splitlines()[-1])
    assert (line["rows"], line["written"], line["dead_lettered"]) == \
        (3000, 3000, 0)
    assert line["rows_s"] > 0 and line["target"] == ef.target
    assert db.count(schema, "chunk") == 3000
    bad = subprocess.run([EMBEDFLOW_BIN, "bench", "--target", "nowhere"],
                         capture_output=True, text=True, timeout=60,
                         env=clean_env())
    assert bad.returncode == 2 and "HOST:PORT" in bad.stderr
