"""The command line: usage errors, a database that is not there, the demo
and `run` with the private PostgreSQL they start themselves."""
import os
import re
import subprocess
import time

import psycopg2
import pytest

from conftest import EMBEDFLOW_BIN, DATABASE, Embedflow, clean_env
from helpers import private_data_dir, send, stream


def run_cli(*args, timeout=60, env=None):
    """Runs embedflow to completion; returns (exit code, stdout+stderr)."""
    p = subprocess.run([EMBEDFLOW_BIN, *args], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=env or clean_env(), timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def test_run_help():
    rc, out = run_cli("run", "--help")
    assert rc == 0, out
    assert "--database" in out and "--listen" in out


def test_config_file_with_unknown_key_exits_2(tmp_path):
    for text, key in [("dim: 16\nno_such_setting: 3\n", "no_such_setting"),
                      ("actors:\n  splitter:\n    batch_rowz: 10\n",
                       "batch_rowz")]:
        config = tmp_path / "embedflow.yaml"
        config.write_text(text)
        rc, out = run_cli("run", "--config", str(config),
                          "--database", DATABASE)
        assert rc == 2, out
        assert key in out, f"the message does not name {key}: {out}"


def test_bad_flags_exit_2():
    for args, word in [(["--writers", "many"], "writers"),
                       (["--no-such-flag", "1"], "no-such-flag|no_such_flag"),
                       (["--actors.no-such-actor.x", "1"], "no-such-actor")]:
        rc, out = run_cli("run", "--database", DATABASE, *args)
        assert rc == 2, f"{args}: exit {rc}\n{out}"
        assert re.search(word, out), f"{args}: {out}"


@pytest.mark.parametrize("args, flag", [
    (["demo", "--rows", "10k"], "--rows"),
    (["demo", "--chunk-rows", "1.5"], "--chunk-rows"),
    (["demo", "--streams", "0"], "--streams"),
    (["bench", "--rows", "10k"], "--rows"),
    (["bench", "--runs", "3x"], "--runs"),
    (["bench", "--slow-ms", "5 parsecs"], "--slow-ms"),
    (["pull", "--source", "s", "--target", "127.0.0.1:1",
      "--chunk-size", "10k"], "--chunk-size"),
    (["jobs", "--limit", "20 rows"], "--limit"),
    (["top", "--metrics", "127.0.0.1:1", "--count", "2x"], "--count"),
    (["top", "--metrics", "127.0.0.1:1", "--interval", "1s"], "--interval"),
    (["check", "--timeout", "5 s x"], "--timeout"),
], ids=lambda v: v if isinstance(v, str) else "-".join(v[:2]))
def test_numeric_flag_is_typed(args, flag):
    """A numeric command flag is parsed like a config key of its type:
    `demo --rows 10k` is not 10 rows but exit 2 naming the flag, before
    anything starts (no database is given and none is started)."""
    rc, out = run_cli(*args, "--database", DATABASE, timeout=30)
    assert rc == 2, f"{args}: exit {rc}\n{out}"
    assert flag in out, f"{args}: the message does not name {flag}: {out}"


@pytest.mark.parametrize("database", [
    "host=127.0.0.1 port=1 user=ef password=Pa55-s3cret dbname=x "
    "connect_timeout=2",
    "postgresql://ef:Pa55-s3cret@127.0.0.1:1/x?connect_timeout=2",
], ids=["conninfo", "url"])
def test_unreachable_database_fails_fast_without_password(database):
    start = time.monotonic()
    rc, out = run_cli("run", "--database", database, "--listen",
                      "127.0.0.1:0", "--schema", "unreachable", timeout=30)
    elapsed = time.monotonic() - start
    assert rc == 1, f"exit {rc}\n{out}"
    assert elapsed < 10, f"took {elapsed:.1f} s\n{out}"
    assert re.search(r"(?i)database|postgres|connect", out), out
    assert "Pa55-s3cret" not in out, "the password was printed"


SSLPASS, PASSWD, PASSWORD = "Xyz-sslpass-71", "Abc-passwd-82", "Def-pass-93"


@pytest.mark.parametrize("database,named", [
    (f"host=10.255.255.1 connect_timeout=1 sslpassword={SSLPASS} "
     f"passwd={PASSWD} password={PASSWORD} user=ef dbname=x", "passwd"),
    (f"host=10.255.255.1 connect_timeout=1 sslpassword={SSLPASS} "
     f"password={PASSWORD} user=ef dbname=x", None),
    (f"postgresql://ef:{PASSWORD}@10.255.255.1/x?connect_timeout=1"
     f"&sslpassword={SSLPASS}&pass%77ord={PASSWORD}", None),
    (f"postgres://ef:{PASSWORD}@10.255.255.1/x?connect_timeout=1"
     f"&sslpassword={SSLPASS}&passwd={PASSWD}", "passwd"),
    # libpq quotes the token it cannot decode in its own error
    (f"postgresql://ef:{PASSWORD}%zz@10.255.255.1/x", "percent"),
    # libpq would read "{PASSWORD}@10..." as the host and print it
    (f"postgresql://ef:{SSLPASS}@{PASSWORD}@10.255.255.1/x", "%40"),
], ids=["conninfo-passwd", "conninfo", "url", "url-passwd", "url-bad-escape",
        "url-unencoded-at"])
def test_no_secret_keyword_is_printed(database, named):
    """Every keyword libpq hides (password, sslpassword), a keyword it
    does not know (passwd) and a string it cannot parse: exit 1, the
    reason named, no secret in the output."""
    rc, out = run_cli("run", "--database", database, "--listen",
                      "127.0.0.1:0", "--schema", "secrets", timeout=30)
    assert rc == 1, f"exit {rc}\n{out}"
    assert "cannot connect to PostgreSQL" in out, out
    for secret in (SSLPASS, PASSWD, PASSWORD):
        assert secret not in out, f"{secret} was printed:\n{out}"
    assert "sslpassword=***" in out or "://ef:***@" in out, out
    if named:
        assert named in out, out


@pytest.fixture(scope="module")
def data_dir():
    yield from private_data_dir()


def test_demo_end_to_end(data_dir):
    rc, out = run_cli("demo", "--rows", "5000", "--dim", "64", "--writers",
                      "2", "--data-dir", data_dir, timeout=300)
    assert rc == 0, out
    assert re.search(r"rows written\s+5,?000\b", out), out
    assert re.search(r"dead-lettered\s+0\b", out), out
    # The private server was stopped on the way out.
    assert not os.path.exists(
        os.path.join(data_dir, "pgdata", "postmaster.pid")), out


def test_run_with_private_postgres(data_dir):
    ef = Embedflow(["run", "--data-dir", data_dir, "--listen", "127.0.0.1:0",
                    "--schema", "private_it", "--dim", "8"])
    try:
        ef.wait_ready(60)
        result = send(ef.target, stream(300, 8, 100))
        assert result.written == 300
        conn = psycopg2.connect(host=os.path.join(data_dir, "run"),
                                port=5432, user="postgres", dbname="postgres")
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM private_it.chunk")
                assert cur.fetchone()[0] == 300
        finally:
            conn.close()
    finally:
        rc = ef.stop()
    assert rc == 0, ef.log
    assert not os.path.exists(
        os.path.join(data_dir, "pgdata", "postmaster.pid")), ef.log


def test_demo_runs_no_scheduled_job(schema):
    """demo runs the pipeline in its own process for its own upload: a
    scheduled job of the configuration never fires there (one firing
    every second would otherwise start before the upload ends)."""
    job = ["--jobs.src.target", "127.0.0.1:1", "--jobs.src.source", "s",
           "--jobs.src.schedule", "* * * * * *"]
    rc, out = run_cli("demo", "--database", DATABASE, "--schema", schema,
                      "--rows", "300", "--dim", "8", "--chunk-rows", "100",
                      *job, timeout=120)
    assert rc == 0, out
    assert re.search(r"rows written\s+300\b", out), out
    assert "job src" not in out, out


def run_in(cwd, *args, env=None):
    p = subprocess.run([EMBEDFLOW_BIN, *args], cwd=cwd,
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, env=env or clean_env(),
                       timeout=60)
    return p.returncode, p.stdout.decode("utf-8", "replace")


@pytest.mark.parametrize("command", [
    ["dlq", "ls"], ["jobs"], ["index"],
    ["pull", "--source", "docs", "--target", "127.0.0.1:9"]])
def test_readers_need_a_database_not_an_empty_private_one(tmp_path, command):
    # dlq, jobs, index and pull work on what run stored: with no database
    # and no private server made before, an empty one would look like the
    # truth (a configuration error: exit 2)
    rc, out = run_in(tmp_path, *command)
    assert rc == 2, out
    assert "no database configured" in out and "--data-dir" in out, out
    assert not (tmp_path / "embedflow-data").exists()


def test_any_libpq_connection_variable_names_the_database(tmp_path):
    # only PGUSER set: libpq's defaults choose the server, as for psql;
    # no private server is made
    rc, out = run_in(tmp_path, "jobs",
                     env=clean_env(PGUSER="embedflow_nobody",
                                   PGHOST=str(tmp_path / "no-socket")))
    assert rc == 1, out
    assert "private PostgreSQL" not in out, out
    rc, out = run_in(tmp_path, "jobs", env=clean_env(PGPASSWORD="x"))
    assert "private PostgreSQL" not in out, out
    assert not (tmp_path / "embedflow-data").exists()


@pytest.mark.parametrize("command", [["jobs"], ["dlq", "ls"], ["graph"],
                                     ["bench"], ["index"]])
def test_metrics_flag_refused_where_nothing_serves_it(tmp_path, command):
    rc, out = run_in(tmp_path, *command, "--metrics", "127.0.0.1:0")
    assert rc == 2, out
    assert "--metrics" in out and "serves no metrics" in out, out


def test_help_wins_over_a_config_that_does_not_load(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("no_such_key: 1\n")
    for path in (str(bad), str(tmp_path / "missing.yaml")):
        rc, out = run_in(tmp_path, "run", "--config", path, "--help")
        assert rc == 0, out
        assert "usage: embedflow run" in out, out


def test_run_help_lists_the_runtime_keys():
    rc, out = run_cli("run", "--help")
    assert rc == 0, out
    for key in ("drain_idle", "drain_timeout", "plugins", "run ", "host "):
        assert f"\n  {key}" in out, key
