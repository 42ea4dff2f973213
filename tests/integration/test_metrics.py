"""The metrics endpoint of `embedflow run --metrics HOST:PORT`: counters
that add up to the rows uploaded, histograms with one observation per row
or batch, /healthz, and /readyz following the database."""
import os
import re
import subprocess
import time
import urllib.error
import urllib.request

import grpc

from conftest import DATABASE, EMBEDFLOW_BIN, Embedflow, clean_env
from helpers import (chunk, raw_call, row, scrape_samples, send, stream,
                     wait_until)

PG_SH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                     "pg.sh")
_METRICS = r"metrics on (http://\S+:\d+)/metrics"


def get(url):
    """(status, body) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def poll_readyz(base, want, timeout=15):
    """Asks /readyz until it answers want (or timeout); returns the last
    (status, body)."""
    deadline = time.monotonic() + timeout
    status, body = get(base + "/readyz")
    while status != want and time.monotonic() < deadline:
        time.sleep(0.2)
        status, body = get(base + "/readyz")
    return status, body


def total(samples, name, actor_prefix):
    """Sum of name over the instances whose actor label starts with
    actor_prefix."""
    return sum(v for (n, labels), v in samples.items()
               if n == name and labels.startswith(f'actor="{actor_prefix}'))


def test_counters_add_up_to_the_upload(embedflow):
    ef = embedflow(writers=2, dim=8, extra=[
        "--metrics", "127.0.0.1:0", "--batch-rows", "64"])
    base = ef.wait_for_line(_METRICS).group(1)
    ef.wait_for_line(r"embedflow: ready$")
    assert get(base + "/healthz") == (200, "ok\n")
    assert get(base + "/readyz") == (200, "ready\n")
    assert get(base + "/nothing")[0] == 404

    n, chunk_rows = 600, 50
    result = send(ef.target, stream(n, 8, chunk_rows))
    assert result.written == n

    def acks_counted():
        # a writer counts an ack once zmq took it, which can be a moment
        # after the receiver replied to the client
        s = scrape_samples(base)
        return s if total(s, "embedflow_actor_messages_out_total",
                          "db-writer") >= total(
            s, "embedflow_actor_batches_total", "db-writer") else None

    s = wait_until("the writers' acks counted", acks_counted, timeout=10)

    def actor(name, prefix):
        return total(s, "embedflow_actor_" + name, prefix)

    assert actor("rows_in_total", "grpc-receiver") == n
    assert actor("rows_out_total", "grpc-receiver") == n
    assert actor("in_flight_rows", "grpc-receiver") == 0
    assert actor("listening", "grpc-receiver") == 1
    assert actor("rows_in_total", "splitter") == n
    assert actor("rows_out_total", "splitter") == n
    assert actor("messages_in_total", "splitter") == n // chunk_rows
    assert actor("bytes_in_total", "splitter") > n * 8 * 4
    # both writers took part, and together wrote every row once
    w0 = s[("embedflow_actor_rows_out_total", 'actor="db-writer[0]"')]
    w1 = s[("embedflow_actor_rows_out_total", 'actor="db-writer[1]"')]
    assert w0 > 0 and w1 > 0 and w0 + w1 == n
    assert actor("rows_in_total", "db-writer") == n
    batches = actor("batches_total", "db-writer")
    assert batches == actor("batches_total", "splitter") >= n // 64
    assert actor("messages_out_total", "db-writer") == batches  # acks
    assert actor("errors_total", "db-writer") == 0
    assert actor("dead_lettered_total", "splitter") == 0

    # one latency observation per row, one commit time per batch
    assert s[("embedflow_pipeline_latency_seconds_count", "")] == n
    assert s[("embedflow_pipeline_latency_seconds_bucket",
              'le="+Inf"')] == n
    assert s[("embedflow_pipeline_latency_seconds_sum", "")] > 0
    commits = sum(v for (name, labels), v in s.items()
                  if name == "embedflow_writer_commit_seconds_count")
    assert commits == batches
    assert s[("embedflow_process_resident_memory_bytes", "")] > 1e6
    assert s[("embedflow_process_cpu_seconds_total", "")] > 0

    # buckets are cumulative and end at the count
    buckets = sorted((float(re.search(r'le="([^"]+)"', labels).group(1)), v)
                     for (name, labels), v in s.items()
                     if name == "embedflow_pipeline_latency_seconds_bucket")
    values = [v for _, v in buckets]
    assert values == sorted(values) and values[-1] == n

    # invalid rows are counted where they are dead-lettered
    bad = stream(10, 4, 10, doc_prefix="short")    # wrong dimension
    result = send(ef.target, bad)
    assert result.dead_lettered == 10
    s = scrape_samples(base)
    assert total(s, "embedflow_actor_dead_lettered_total", "splitter") == 10
    assert total(s, "embedflow_actor_dead_lettered_total", "dlq") == 10
    assert total(s, "embedflow_actor_rows_in_total", "grpc-receiver") \
        == n + 10


def test_job_counters_follow_each_source(embedflow):
    """embedflow_job_*{job_name=SOURCE}: rows received, written and
    dead-lettered per upload source, and runs by outcome."""
    ef = embedflow(writers=2, dim=8, extra=["--metrics", "127.0.0.1:0"])
    base = ef.wait_for_line(_METRICS).group(1)
    good_a, bad_a, n_b = 300, 20, 150
    # source a: good rows, then one chunk of the wrong dimension
    chunks = stream(good_a, 8, 50) + [
        chunk([row("short", i, 4) for i in range(bad_a)], 99)]
    result = send(ef.target, chunks, source="a")
    assert (result.written, result.dead_lettered) == (good_a, bad_a)
    # source b: a name that needs escaping in the text format
    b = 'b "quoted" \\ name'
    result = send(ef.target, stream(n_b, 8, 50, doc_prefix="bee"), source=b)
    assert (result.written, result.dead_lettered) == (n_b, 0)
    # a failed run under the default source: not an EmbeddingChunk
    err = raw_call(ef.target, [b"\xff\xff\xff"])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    s = scrape_samples(base)

    def job(name, source, status=None):
        label = 'job_name="%s"' % source.replace("\\", "\\\\").replace(
            '"', '\\"')
        if status:
            label += f',status="{status}"'
        return s[("embedflow_job_" + name, label)]

    assert job("rows_received_total", "a") == good_a + bad_a
    assert job("rows_written_total", "a") == good_a
    assert job("rows_dead_lettered_total", "a") == bad_a
    assert job("runs_total", "a", "completed") == 1
    assert job("runs_total", "a", "failed") == 0
    assert job("rows_received_total", b) == n_b
    assert job("rows_written_total", b) == n_b
    assert job("rows_dead_lettered_total", b) == 0
    assert job("runs_total", b, "completed") == 1
    assert job("runs_total", "upload", "failed") == 1
    assert job("runs_total", "upload", "completed") == 0
    # per-job rows add up to the receiver's
    assert sum(v for (n, _), v in s.items()
               if n == "embedflow_job_rows_received_total") \
        == total(s, "embedflow_actor_rows_in_total", "grpc-receiver")


def test_demo_serves_metrics_until_told(schema):
    """`demo --metrics --linger` keeps the endpoint up after the summary,
    so the final counts are scraped without racing the demo's exit."""
    n = 2000
    ef = Embedflow(["demo", "--database", DATABASE, "--schema", schema,
                    "--rows", str(n), "--dim", "8", "--writers", "2",
                    "--chunk-rows", "100", "--metrics", "127.0.0.1:0",
                    "--linger"])
    try:
        base = ef.wait_for_line(_METRICS).group(1)
        ef.wait_for_line(r"done; serving metrics", timeout=120)
        assert re.search(r"rows written\s+2,?000\b", ef.log), ef.log
        s = scrape_samples(base)
        assert total(s, "embedflow_actor_rows_in_total", "grpc-receiver") == n
        assert total(s, "embedflow_actor_rows_out_total", "db-writer") == n
        assert s[("embedflow_pipeline_latency_seconds_count", "")] == n
        assert s[("embedflow_job_rows_written_total",
                  'job_name="demo"')] == n
        assert s[("embedflow_job_runs_total",
                  'job_name="demo",status="completed"')] == 1
        assert get(base + "/healthz") == (200, "ok\n")
        status, body = get(base + "/readyz")     # the pipeline has stopped
        assert status == 503 and "not listening" in body, body
        assert ef.stop() == 0, ef.log
    finally:
        if ef.alive():
            ef.proc.kill()


def test_demo_metrics_flags():
    p = subprocess.run([EMBEDFLOW_BIN, "demo", "--help"],
                       stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=30, env=clean_env())
    assert p.returncode == 0
    assert "--metrics" in p.stdout and "--linger" in p.stdout
    p = subprocess.run([EMBEDFLOW_BIN, "demo", "--rows", "10", "--linger"],
                       stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=30, env=clean_env())
    assert p.returncode == 2, p.stderr
    assert "--linger needs --metrics" in p.stderr
    p = subprocess.run([EMBEDFLOW_BIN, "demo", "--database",
                        "host=/nonexistent", "--schema", "unused",
                        "--metrics", "no-port-here"],
                       stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=30, env=clean_env())
    assert p.returncode == 2, p.stderr
    assert "not HOST:PORT" in p.stderr


def test_bad_metrics_address_is_a_usage_error(schema):
    p = subprocess.run(
        [EMBEDFLOW_BIN, "run", "--database", "host=/nonexistent",
         "--schema", schema, "--metrics", "no-port-here"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=30, env=clean_env())
    assert p.returncode == 2, p.stderr
    assert "not HOST:PORT" in p.stderr


def test_readyz_follows_the_database(tmp_path):
    """A private server for this test alone: stopping the shared one
    would break the tests running beside it."""
    pgdir = tmp_path / "pg"
    subprocess.run([PG_SH, "start", str(pgdir)], check=True, timeout=120)
    conninfo = f"host={pgdir}/sock port=5432 user=postgres dbname=postgres"
    ef = Embedflow(["run", "--database", conninfo, "--listen",
                    "127.0.0.1:0", "--dim", "8", "--writers", "1",
                    "--metrics", "127.0.0.1:0"])
    try:
        ef.wait_ready()
        base = ef.wait_for_line(_METRICS).group(1)
        ef.wait_for_line(r"embedflow: ready$")  # every writer connected
        assert get(base + "/readyz") == (200, "ready\n"), ef.log
        subprocess.run([PG_SH, "stop", str(pgdir)], check=True, timeout=120)
        # nothing tells when the server is gone but asking: poll (the
        # answer is cached for a second)
        status, body = poll_readyz(base, 503)
        assert status == 503, body
        assert "database not reachable" in body
        assert get(base + "/healthz") == (200, "ok\n")
        subprocess.run([PG_SH, "start", str(pgdir)], check=True, timeout=120)
        assert poll_readyz(base, 200)[0] == 200
        assert ef.stop() == 0
    finally:
        if ef.alive():
            ef.proc.kill()
        subprocess.run([PG_SH, "stop", str(pgdir)], timeout=120)


def test_top_shows_every_actor_instance(embedflow):
    ef = embedflow(writers=2, dim=8, extra=["--metrics", "127.0.0.1:0"])
    base = ef.wait_for_line(_METRICS).group(1)
    address = base[len("http://"):]
    assert send(ef.target, stream(300, 8, 30)).written == 300

    p = subprocess.run([EMBEDFLOW_BIN, "top", "--metrics", address,
                        "--once"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=30,
                       env=clean_env())
    assert p.returncode == 0, p.stderr
    assert "\033[" not in p.stdout      # not a terminal: plain lines
    rows = {line.split()[0]: line.split() for line in p.stdout.splitlines()
            if line and not line.startswith(("embedflow top", "ACTOR"))}
    # every instance, idle ones included (other actors may run too)
    assert {"grpc-receiver", "splitter", "db-writer[0]", "db-writer[1]",
            "dlq"} <= set(rows), p.stdout
    assert rows["grpc-receiver"][1] == "300"        # rows in
    assert rows["splitter"][3] == "300"             # rows out
    assert int(rows["db-writer[0]"][3]) + int(rows["db-writer[1]"][3]) == 300

    # two frames with rates between them
    p = subprocess.run([EMBEDFLOW_BIN, "top", "--metrics", address,
                        "--count", "2", "--interval", "0.2"],
                       stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=30, env=clean_env())
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("embedflow top") == 2


def test_top_needs_a_reachable_endpoint():
    p = subprocess.run([EMBEDFLOW_BIN, "top", "--once"],
                       stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=30, env=clean_env())
    assert p.returncode == 2 and "--metrics HOST:PORT" in p.stderr
    p = subprocess.run([EMBEDFLOW_BIN, "top", "--once", "--metrics",
                        "127.0.0.1:1"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=30,
                       env=clean_env())
    assert p.returncode == 1 and "cannot connect" in p.stderr


def test_writer_counts_retries_and_reconnects(schema, db):
    """The writers' sessions are killed between two uploads: the next
    batch fails, is retried after a reconnect, and the counters say so."""
    appname = f"ef-metrics-{os.getpid()}"
    ef = Embedflow(["run", "--database", DATABASE, "--schema", schema,
                    "--listen", "127.0.0.1:0", "--dim", "8", "--writers", "1",
                    "--metrics", "127.0.0.1:0",
                    "--actors.db-writer.retry_base", "10ms"],
                   env=clean_env(PGAPPNAME=appname))
    try:
        ef.wait_ready()
        base = ef.wait_for_line(_METRICS).group(1)
        ef.wait_for_line(r"embedflow: ready$")
        assert send(ef.target, stream(50, 8, 50)).written == 50
        killed = db.scalar("SELECT count(pg_terminate_backend(pid)) FROM "
                           "pg_stat_activity WHERE application_name = %s",
                           (appname,))
        assert killed >= 1
        result = send(ef.target, stream(50, 8, 50, doc_prefix="again"))
        assert result.written == 50
        s = scrape_samples(base)
        w = 'actor="db-writer"'
        assert s[("embedflow_actor_reconnects_total", w)] == 1
        assert s[("embedflow_actor_retries_total", w)] >= 1
        assert s[("embedflow_actor_errors_total", w)] >= 1
        assert s[("embedflow_actor_rows_out_total", w)] == 100
        assert s[("embedflow_actor_batches_total", w)] == 2
        assert ef.stop() == 0
    finally:
        if ef.alive():
            ef.proc.kill()


DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                    "docs", "observability.md")


def test_every_series_is_documented(embedflow):
    """Each metric family a running pipeline serves (adaptive writers, after
    an upload) has its line in docs/observability.md, in full or as the
    `_suffix` shorthand the table uses after a full name."""
    ef = embedflow(writers=2, dim=8, extra=[
        "--metrics", "127.0.0.1:0", "--actors.db-writer.adaptive", "true"])
    base = ef.wait_for_line(_METRICS).group(1)
    ef.wait_for_line(r"embedflow: ready$")
    assert send(ef.target, stream(200, 8, 50)).written == 200
    status, text = get(base + "/metrics")
    assert status == 200
    families = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    assert "embedflow_writer_cap_rows" in families
    doc = open(DOCS).read()
    missing = []
    for name in sorted(families):
        # histograms are documented by their family name
        short = re.sub(r"^embedflow_[a-z]+", "", name)
        if f"`{name}" not in doc and f"`{short}`" not in doc:
            missing.append(name)
    assert not missing, f"not in docs/observability.md: {missing}"
