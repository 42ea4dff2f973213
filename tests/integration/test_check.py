"""`embedflow check` (a configuration and what it names, reached without
running the pipeline), `embedflow config` (the effective configuration
as YAML, secrets masked) and ${VAR} in config files."""
import re
import socket
import subprocess

import pytest
import yaml

from conftest import EMBEDFLOW_BIN, DATABASE, clean_env
from pullhelp import AiServer
from test_invalidation import CacheServer, free_port


def run_cli(*args, env=None, timeout=60):
    """Runs embedflow to completion; returns (exit code, stdout, stderr)."""
    p = subprocess.run([EMBEDFLOW_BIN, *args], stdin=subprocess.DEVNULL,
                       capture_output=True, env=env or clean_env(),
                       timeout=timeout)
    return (p.returncode, p.stdout.decode("utf-8", "replace"),
            p.stderr.decode("utf-8", "replace"))


def line(out, status, what):
    """The check line of `what` with status OK, INFO or FAIL, or None."""
    for text in out.splitlines():
        if re.match(rf"{status}\s+{re.escape(what)}: ", text):
            return text
    return None


@pytest.fixture
def servers(tmp_path):
    """An AI server (GetEmbeddings) and a CacheService, stopped after."""
    ai = AiServer(rows=10)
    cache = CacheServer(free_port(), str(tmp_path / "calls.jsonl"))
    yield ai, cache
    ai.stop()
    cache.stop()


def test_check_good_config(tmp_path, servers, schema):
    ai, cache = servers
    link_port = free_port()
    config = tmp_path / "good.yaml"
    config.write_text(f"""
dim: 16
api_server: "127.0.0.1:{cache.port}"
actors:
  grpc-receiver: {{ listen: "127.0.0.1:0" }}
links:
  dead: {{ endpoint: "tcp://127.0.0.1:{link_port}" }}
jobs:
  docs: {{ target: "{ai.target}" }}
""")
    rc, out, err = run_cli("check", "--config", str(config), "--database",
                           DATABASE, "--schema", schema)
    assert rc == 0, out + err
    assert line(out, "OK", "config"), out
    assert line(out, "OK", "database"), out
    assert "does not exist yet" in line(out, "OK", f'schema "{schema}"'), out
    assert line(out, "OK", "grpc-receiver"), out
    assert line(out, "OK", "api_server"), out
    assert line(out, "OK", "jobs.docs"), out
    assert f"can bind tcp://127.0.0.1:{link_port}" in line(
        out, "OK", "links.dead"), out
    assert "FAIL" not in out
    assert "all checks passed" in out


def test_check_reports_each_unreachable_peer(tmp_path):
    """Nothing listens where the API server, the job's server and a link's
    consumer should be: one FAIL line each, exit 1."""
    closed = [free_port() for _ in range(3)]
    config = tmp_path / "down.yaml"
    config.write_text(f"""
api_server: "127.0.0.1:{closed[0]}"
run: [grpc-receiver, grpc-puller, scheduler, cache-invalidator]
actors:
  grpc-receiver: {{ listen: "127.0.0.1:0" }}
links:
  chunks: {{ endpoint: "tcp://127.0.0.1:{closed[2]}" }}
  acks: {{ endpoint: "tcp://127.0.0.1:{free_port()}" }}
  pull-acks: {{ endpoint: "tcp://127.0.0.1:{free_port()}" }}
  committed: {{ endpoint: "tcp://127.0.0.1:{free_port()}" }}
jobs:
  docs: {{ target: "127.0.0.1:{closed[1]}" }}
""")
    rc, out, err = run_cli("check", "--config", str(config), "--database",
                           DATABASE, "--timeout", "2s")
    assert rc == 1, out + err
    assert "refused" in line(out, "FAIL", "api_server"), out
    assert "refused" in line(out, "FAIL", "jobs.docs"), out
    assert f"127.0.0.1:{closed[2]}" in line(out, "FAIL", "links.chunks"), out
    assert line(out, "OK", "links.acks"), out     # bound by this process
    assert "something is not reachable" in out


def test_check_two_ends_on_one_port(tmp_path):
    """Two links this process binds on the same port cannot both be had."""
    port = free_port()
    rc, out, err = run_cli(
        "check", "--database", DATABASE, "--listen", "127.0.0.1:0",
        "--links.dead.endpoint", f"tcp://127.0.0.1:{port}",
        "--links.acks.endpoint", f"tcp://127.0.0.1:{port}")
    assert rc == 1, out + err
    assert "in use" in (line(out, "FAIL", "links.acks")
                        or line(out, "FAIL", "links.dead")), out


def test_check_port_in_use():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        taken = s.getsockname()[1]
        rc, out, err = run_cli("check", "--database", DATABASE,
                               "--listen", f"127.0.0.1:{taken}")
    assert rc == 1, out + err
    assert "in use" in line(out, "FAIL", "grpc-receiver"), out


def test_check_bad_key_exits_2(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("actors:\n  splitter:\n    batch_rowz: 10\n")
    rc, out, err = run_cli("check", "--config", str(config), "--database",
                           DATABASE)
    assert rc == 2, out + err
    assert "batch_rowz" in err and "bad.yaml:3" in err, err
    assert "OK" not in out      # nothing was reached


@pytest.mark.parametrize("database", [
    "host=127.0.0.1 port=1 user=ef password=Pa55-s3cret dbname=x",
    "postgresql://ef:Pa55-s3cret@127.0.0.1:1/x",
], ids=["conninfo", "url"])
def test_check_unreachable_database_exits_1(database):
    rc, out, err = run_cli("check", "--database", database,
                           "--listen", "127.0.0.1:0", "--timeout", "2s")
    assert rc == 1, out + err
    fail = line(out, "FAIL", "database")
    assert fail and "127.0.0.1" in fail, out
    assert "Pa55-s3cret" not in out + err
    assert line(out, "OK", "grpc-receiver"), out  # the other checks ran


def test_check_unparsable_conninfo_is_bad_configuration():
    rc, out, err = run_cli("check", "--database",
                           "postgresql://ef:p@ss@127.0.0.1/x",
                           "--listen", "127.0.0.1:0")
    assert rc == 2, out + err
    assert line(out, "FAIL", "database"), out
    assert "p@ss" not in out + err


def test_check_missing_pgvector(schema, db):
    """On a PostgreSQL without pgvector check says so, as information
    that does not fail the check."""
    if db.scalar("SELECT count(*) FROM pg_available_extensions "
                 "WHERE name = 'vector'"):
        pytest.skip("this server has pgvector")
    rc, out, err = run_cli("check", "--database", DATABASE, "--schema",
                           schema, "--listen", "127.0.0.1:0")
    assert rc == 0, out + err
    info = line(out, "INFO", "pgvector")
    assert info and "not available" in info and "real[]" in info, out


def test_check_schema_version_and_dim(embedflow, schema):
    ef = embedflow(dim=16, extra=("--vector-type", "real"))
    assert ef.stop() == 0
    rc, out, err = run_cli("check", "--database", DATABASE, "--schema",
                           schema, "--dim", "16", "--listen", "127.0.0.1:0")
    assert rc == 0, out + err
    ok = line(out, "OK", f'schema "{schema}"')
    assert ok and re.search(r"at version \d+, this embedflow's", ok), out
    assert "real[]" in ok
    rc, out, err = run_cli("check", "--database", DATABASE, "--schema",
                           schema, "--dim", "32", "--listen", "127.0.0.1:0")
    assert rc == 2, out + err
    assert "16-dimension" in line(out, "FAIL", f'schema "{schema}"'), out


def test_check_and_config_help():
    for command in ("check", "config"):
        rc, out, _ = run_cli(command, "--help")
        assert rc == 0 and f"usage: embedflow {command}" in out, out
    rc, out, _ = run_cli("help")
    assert re.search(r"^  check ", out, re.M), out
    assert re.search(r"^  config ", out, re.M), out


# --- config ---------------------------------------------------------------

SECRET_CONFIG = """
database: "host=db.internal user=ingest password=${EF_TEST_PW} dbname=v"
dim: 32
actors:
  splitter: { linger: 50ms }
  grpc-receiver: { auth_token: "${EF_TEST_TOKEN}" }
jobs:
  docs:
    target: "ai.internal:50061"
    auth_token: "job-token-1"
"""


def test_config_prints_yaml_with_defaults_and_secrets_masked(tmp_path):
    config = tmp_path / "s.yaml"
    config.write_text(SECRET_CONFIG)
    env = clean_env(EF_TEST_PW="Pa55-s3cret", EF_TEST_TOKEN="tok-s3cret")
    rc, out, err = run_cli("config", "--config", str(config),
                           "--batch-rows", "700", env=env)
    assert rc == 0, out + err
    for secret in ("Pa55-s3cret", "tok-s3cret", "job-token-1"):
        assert secret not in out + err
    doc = yaml.safe_load(out)
    assert doc["database"] == ("host=db.internal user=ingest password=*** "
                               "dbname=v")
    assert doc["actors"]["grpc-receiver"]["auth_token"] == "***"
    assert doc["jobs"]["docs"]["auth_token"] == "***"
    assert doc["dim"] == 32
    assert doc["actors"]["splitter"]["linger"] == "50ms"
    assert doc["actors"]["splitter"]["batch_rows"] == 700     # the flag
    # defaults included
    assert doc["schema"] == "embedflow"
    assert doc["actors"]["db-writer"]["instances"] == 2
    assert doc["actors"]["grpc-receiver"]["max_message_bytes"] == "16M"
    assert doc["jobs"]["docs"]["retries"] == 8
    assert doc["links"]["batches"]["hwm"] == 4
    assert doc["run"] == "all"


def test_config_output_loads_back_to_the_same(tmp_path):
    config = tmp_path / "a.yaml"
    config.write_text("""
dim: 64
run: [splitter, db-writer, dlq, cache-invalidator]
links:
  chunks: { endpoint: "tcp://127.0.0.1:7001" }
  acks: { endpoint: "tcp://127.0.0.1:7002" }
  pull-acks: { endpoint: "tcp://127.0.0.1:7003" }
jobs:
  odd: { target: "h:1", filter: 'k="$${x}"\\\\' }
""")
    rc, first, err = run_cli("config", "--config", str(config))
    assert rc == 0, first + err
    again = tmp_path / "b.yaml"
    again.write_text(first)
    rc, second, err = run_cli("config", "--config", str(again))
    assert rc == 0, second + err
    assert second == first
    assert yaml.safe_load(first)["run"] == ["splitter", "db-writer", "dlq",
                                            "cache-invalidator"]


def test_config_bad_file_exits_2(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("dim: many\n")
    rc, out, err = run_cli("config", "--config", str(config))
    assert rc == 2 and "dim" in err and out == "", out + err


# --- ${VAR} -----------------------------------------------------------------

def test_env_var_set_unset_and_defaulted(tmp_path):
    config = tmp_path / "env.yaml"
    config.write_text("""
dim: ${EF_TEST_DIM}
schema: ${EF_TEST_SCHEMA:-from_default}
actors:
  grpc-receiver: { listen: "${EF_TEST_HOST:-127.0.0.1}:${EF_TEST_PORT}" }
""")
    env = clean_env(EF_TEST_DIM="48", EF_TEST_PORT="7777")
    rc, out, err = run_cli("config", "--config", str(config), env=env)
    assert rc == 0, out + err
    doc = yaml.safe_load(out)
    assert doc["dim"] == 48                                  # set
    assert doc["schema"] == "from_default"                   # defaulted
    assert doc["actors"]["grpc-receiver"]["listen"] == "127.0.0.1:7777"

    env["EF_TEST_SCHEMA"] = "from_env"
    rc, out, err = run_cli("config", "--config", str(config), env=env)
    assert rc == 0 and yaml.safe_load(out)["schema"] == "from_env", out + err

    del env["EF_TEST_DIM"]                                   # unset
    for command in ("config", "check", "run"):
        rc, out, err = run_cli(command, "--config", str(config), env=env)
        assert rc == 2, f"{command}: {out}{err}"
        assert "EF_TEST_DIM" in err and "env.yaml:2" in err, err
        assert "dim" in err, err


def test_env_var_value_is_checked_like_any_value(tmp_path):
    config = tmp_path / "env.yaml"
    config.write_text("dim: ${EF_TEST_DIM}\n")
    rc, out, err = run_cli("config", "--config", str(config),
                           env=clean_env(EF_TEST_DIM="lots"))
    assert rc == 2 and "'lots' is not an integer" in err, out + err


def test_env_var_malformed_reference(tmp_path):
    config = tmp_path / "env.yaml"
    for text in ("schema: ${EF_TEST\n", "schema: ${1X}\n",
                 "schema: ${EF TEST}\n"):
        config.write_text(text)
        rc, out, err = run_cli("config", "--config", str(config))
        assert rc == 2 and "schema" in err, f"{text}: {out}{err}"
