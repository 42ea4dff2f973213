"""The PostgreSQL with pgvector the test_pgvector*.py files run on
(tests/pgvector.sh, started by ctest's pgvector fixture): its conninfo,
or the module skipped with the fixture's reason when there is none."""
import os
import struct

import pytest

from conftest import Database

PGV_DIR = os.environ.get("EF_TEST_PGVECTOR_DIR", "")


def pgvector_database():
    """The conninfo of the pgvector server; skips the calling test module
    (with the reason tests/pgvector.sh wrote) when there is none."""
    skip = os.path.join(PGV_DIR, "skip")
    if not PGV_DIR or os.path.exists(skip):
        why = open(skip).read().strip() if PGV_DIR and os.path.exists(skip) \
            else "EF_TEST_PGVECTOR_DIR is not set (run through ctest)"
        pytest.skip(why, allow_module_level=True)
    return (f"host={PGV_DIR}/sock port=5432 user=postgres "
            f"dbname=postgres")


@pytest.fixture(scope="module")
def pdb():
    """The pgvector server, with the extension created."""
    database = Database(pgvector_database())
    database.rows("CREATE EXTENSION IF NOT EXISTS vector")
    yield database
    database.close()


def f32(x):
    """x as the float4 protobuf carries."""
    return struct.unpack("<f", struct.pack("<f", x))[0]
