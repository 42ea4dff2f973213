"""distribution on the usual test PostgreSQL, which has no Citus: a word
that is neither none nor citus stops the command (exit 2) naming the
key; citus there is refused saying what a coordinator needs, with
nothing made half-way, and `check` fails on it; a schema of one
PostgreSQL records distribution none. The cluster itself is tested in
test_citus.py."""
import re
import subprocess

from conftest import DATABASE, EMBEDFLOW_BIN, Embedflow, clean_env
from helpers import chunk, row, send


def test_an_unknown_distribution_is_a_usage_error(schema):
    ef = Embedflow(["run", "--database", DATABASE, "--schema", schema,
                    "--listen", "127.0.0.1:0", "--dim", "8",
                    "--distribution", "sharded"])
    ef.wait_for_line(r"config distribution: 'sharded' is not none or citus")
    assert ef.proc.wait(30) == 2


def test_citus_without_citus_is_refused_and_makes_nothing(db, schema):
    ef = Embedflow(["run", "--database", DATABASE, "--schema", schema,
                    "--listen", "127.0.0.1:0", "--dim", "8",
                    "--distribution", "citus"])
    ef.wait_for_line(r"distribution citus: the citus extension is not "
                     r"installed in database .* connect to the coordinator "
                     r"of a Citus cluster .* or use distribution none")
    assert ef.proc.wait(30) == 1
    assert db.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = %s",
                     (schema,)) == 0
    out = subprocess.run(
        [EMBEDFLOW_BIN, "check", "--database", DATABASE, "--schema", schema,
         "--dim", "8", "--distribution", "citus", "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, env=clean_env(), timeout=60)
    assert out.returncode == 1, out.stdout
    assert re.search(r"FAIL\s+citus: distribution citus: the citus "
                     r"extension is not installed", out.stdout), out.stdout


def test_a_plain_schema_records_none_and_refuses_citus(embedflow, db,
                                                       schema):
    ef = embedflow(dim=8)
    assert send(ef.target, [chunk([row("a", 0, 8)], 1)]).written == 1
    assert db.scalar(f'SELECT value FROM "{schema}".setting '
                     f"WHERE key = 'distribution'") == "none"
    # the keys of one PostgreSQL: embedding has no document_id
    assert db.scalar("SELECT count(*) FROM pg_attribute WHERE attrelid ="
                     " %s::regclass AND attname = 'document_id'",
                     (f'"{schema}".embedding',)) == 0
    out = subprocess.run(
        [EMBEDFLOW_BIN, "check", "--database", DATABASE, "--schema", schema,
         "--dim", "8", "--distribution", "citus", "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, env=clean_env(), timeout=60)
    assert out.returncode == 2, out.stdout
    assert "has distribution none but distribution is citus" in out.stdout


def test_segments_are_refused_on_citus(schema):
    ef = Embedflow(["run", "--database", DATABASE, "--schema", schema,
                    "--listen", "127.0.0.1:0", "--dim", "8",
                    "--distribution", "citus", "--index.method", "hnsw"])
    ef.wait_for_line(r"config index.segments: segmented loading is off on "
                     r"Citus .* set index.segments: false with distribution "
                     r"citus")
    assert ef.proc.wait(30) == 2
