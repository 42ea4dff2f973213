"""vector_type on the usual test PostgreSQL, which has no pgvector: auto
stores real[], asking for pgvector's types says how to get it, and a
word that is no type stops the command (exit 2) naming the key. The
types themselves are tested on a server with pgvector in
test_pgvector.py."""
import pytest

from conftest import Embedflow, DATABASE
from helpers import chunk, row, send


def _has_pgvector(db):
    return db.scalar("SELECT count(*) FROM pg_available_extensions "
                     "WHERE name = 'vector'") > 0


def test_auto_stores_real_without_pgvector(embedflow, db, schema):
    if _has_pgvector(db):
        pytest.skip("this test server has pgvector: auto picks vector")
    ef = embedflow(dim=8, extra=["--vector_type", "auto"])
    assert send(ef.target, [chunk([row("a", 0, 8)], 1)]).written == 1
    assert db.scalar(f'SELECT value FROM "{schema}".setting '
                     f"WHERE key = 'vector_type'") == "real[]"
    assert db.scalar(
        "SELECT format_type (atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attname = 'vector'",
        (f'"{schema}".embedding',)) == "real[]"


@pytest.mark.parametrize("vector_type", ["vector", "halfvec"])
def test_pgvector_types_without_pgvector_say_how_to_get_it(
        db, schema, vector_type):
    if _has_pgvector(db):
        pytest.skip("this test server has pgvector")
    ef = Embedflow(["run", "--database", DATABASE, "--schema", schema,
                    "--listen", "127.0.0.1:0", "--dim", "8",
                    "--vector_type", vector_type])
    ef.wait_for_line(rf"vector_type {vector_type}: pgvector is not "
                     r"installed on this server .*postgresql-15-pgvector"
                     r".*or use vector_type real")
    assert ef.proc.wait(30) == 1
    # nothing was made half-way
    assert db.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = %s",
                     (schema,)) == 0


def test_an_unknown_vector_type_is_a_usage_error(schema):
    ef = Embedflow(["run", "--database", DATABASE, "--schema", schema,
                    "--listen", "127.0.0.1:0", "--dim", "8",
                    "--vector_type", "float16"])
    ef.wait_for_line(r"config vector_type: 'float16' is not auto, vector, "
                     r"halfvec or real")
    assert ef.proc.wait(30) == 2
    ef = Embedflow(["run", "--database", DATABASE, "--schema", schema,
                    "--listen", "127.0.0.1:0", "--dim", "20000",
                    "--vector_type", "halfvec"])
    ef.wait_for_line(r"vector_type: halfvec holds at most 16000 dimensions")
    assert ef.proc.wait(30) == 2


def test_an_index_without_pgvector_is_refused(db, schema):
    if _has_pgvector(db):
        pytest.skip("this test server has pgvector")
    ef = Embedflow(["run", "--database", DATABASE, "--schema", schema,
                    "--listen", "127.0.0.1:0", "--dim", "8",
                    "--index.method", "hnsw"])
    ef.wait_for_line(r"index.method hnsw needs pgvector's vector or halfvec, "
                     r"and the vectors are real\[\]")
    assert ef.proc.wait(30) == 1
    assert db.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = %s",
                     (schema,)) == 0
    # explicit real: refused before anything starts
    ef = Embedflow(["run", "--database", DATABASE, "--schema", schema,
                    "--listen", "127.0.0.1:0", "--dim", "8",
                    "--vector_type", "real", "--index.method", "ivfflat"])
    ef.wait_for_line(r"config index.method ivfflat needs pgvector's vector")
    assert ef.proc.wait(30) == 2


def test_check_says_a_pgvector_type_needs_pgvector(db, schema):
    if _has_pgvector(db):
        pytest.skip("this test server has pgvector")
    import subprocess
    from conftest import EMBEDFLOW_BIN, clean_env
    p = subprocess.run(
        [EMBEDFLOW_BIN, "check", "--database", DATABASE, "--schema", schema,
         "--listen", "127.0.0.1:0", "--vector_type", "halfvec"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        env=clean_env())
    assert p.returncode == 1, p.stdout + p.stderr
    assert "FAIL  pgvector: not available in this database, and " \
        "vector_type halfvec needs it for a new schema" in p.stdout, p.stdout
