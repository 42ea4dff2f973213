"""pgvector's column types, end to end, on a PostgreSQL that has the
extension (tests/pgvector.sh; skipped with its message when there is
none): the values a client uploads are the values stored, bit for bit
(halfvec: rounded to nearest even, as IEEE 754 says), new rows and
updates alike; a value halfvec cannot hold is dead-lettered naming the
row; a nearest-neighbour query finds a row as soon as its upload is
answered; the bench and its baselines run on every type."""
import json
import random
import struct
import subprocess

import pytest

from conftest import EMBEDFLOW_BIN, Embedflow, clean_env, \
    unique_name
from helpers import chunk, row, send
from pgvector_server import f32, pdb, pgvector_database  # noqa: F401 (pdb: fixture)

PGV = pgvector_database()
DIMS = [384, 768, 1536, 3072]


@pytest.fixture
def pschema(request, pdb):
    name = unique_name(request, prefix="pgv")
    yield name
    pdb.rows(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def start(pschema):
    """Starts `embedflow run` on the pgvector server; each one still
    running at teardown must exit 0 on SIGTERM."""
    started = []

    def run(vector_type, dim, schema=None, extra=(), ready=True):
        ef = Embedflow(["run", "--database", PGV,
                        "--schema", schema or pschema,
                        "--listen", "127.0.0.1:0", "--writers", "2",
                        "--dim", str(dim), "--vector_type", vector_type,
                        # one index on one table: the layout these tests
                        # are about (segments: test_pgvector_segments.py)
                        "--index.segments", "false", *extra])
        started.append(ef)
        return ef.wait_ready() if ready else ef

    yield run
    for ef in started:
        if ef.alive():
            assert ef.stop() == 0, ef.log


def edge_vector(dim, seed):
    """Random floats with the values rounding is decided on up front:
    halfvec's largest, a tie to even, subnormal halves, tiny floats."""
    rng = random.Random(seed)
    v = [rng.uniform(-1.0, 1.0) for _ in range(dim)]
    edges = [65504.0, -65504.0, 65519.0, 1.0 + 2 ** -11, 1.0 + 3 * 2 ** -11,
             2 ** -24, 1.5 * 2 ** -25, 2 ** -26, -0.0, 0.1, 1e-3, 3.14159]
    v[:len(edges)] = edges
    return [f32(x) for x in v]


def stored_bytes(db, schema, vector_type, doc, index):
    """The stored vector as its type's send function encodes it."""
    send_fn = f"public.{vector_type}_send"
    got = db.scalar(
        f'SELECT {send_fn} (e.vector) FROM "{schema}".chunk c '
        f'JOIN "{schema}".embedding e USING (id) '
        f'WHERE c.document_id = %s AND c.chunk_index = %s', (doc, index))
    return bytes(got) if got is not None else None


def expected_bytes(vector_type, values):
    elem = ">e" if vector_type == "halfvec" else ">f"
    return struct.pack(">hh", len(values), 0) + b"".join(
        struct.pack(elem, x) for x in values)


@pytest.mark.parametrize("vector_type", ["vector", "halfvec"])
@pytest.mark.parametrize("dim", DIMS)
def test_values_round_trip_exactly(start, pdb, pschema, vector_type, dim):
    ef = start(vector_type, dim)
    vectors = {(f"d{i // 3}", i % 3): edge_vector(dim, f"{dim}:{i}")
               for i in range(12)}
    rows = [row(d, i, dim, vector=v) for (d, i), v in vectors.items()]
    r = send(ef.target, [chunk(rows[:7], 1), chunk(rows[7:], 2)])
    assert (r.written, r.dead_lettered) == (12, 0), r
    column = pdb.scalar(
        "SELECT format_type (atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attname = 'vector'",
        (f'"{pschema}".embedding',))
    assert column == f"{vector_type}({dim})"
    assert pdb.scalar(f'SELECT value FROM "{pschema}".setting '
                      f"WHERE key = 'vector_type'") == \
        f"public.{vector_type}({dim})"
    for (d, i), v in vectors.items():
        assert stored_bytes(pdb, pschema, vector_type, d, i) == \
            expected_bytes(vector_type, v), (d, i)

    # changed vectors go through the staging table (typed like the
    # column): updated exactly, the others untouched
    for key in list(vectors)[:4]:
        vectors[key] = edge_vector(dim, f"{dim}:{key}:again")
    rows = [row(d, i, dim, vector=v) for (d, i), v in vectors.items()]
    r = send(ef.target, [chunk(rows, 1)])
    assert (r.written, r.dead_lettered) == (12, 0), r
    assert pdb.count(pschema, "embedding") == 12
    for (d, i), v in vectors.items():
        assert stored_bytes(pdb, pschema, vector_type, d, i) == \
            expected_bytes(vector_type, v), (d, i)
    # halfvec is within its precision of what was sent
    if vector_type == "halfvec":
        v = vectors[("d0", 0)]
        back = struct.unpack(f">{dim}e",
                             stored_bytes(pdb, pschema, "halfvec", "d0", 0)[4:])
        assert all(abs(a - b) <= abs(a) * 2 ** -11 + 2 ** -25
                   for a, b in zip(v, back))


def test_halfvec_out_of_range_is_dead_lettered_naming_the_row(
        start, pdb, pschema):
    ef = start("halfvec", 8)
    good = [row("ok", i, 8) for i in range(5)]
    bad = row("too-big", 0, 8, vector=[0.5, 1.0, 70000.0, 0, 0, 0, 0, 0])
    r = send(ef.target, [chunk(good[:2] + [bad] + good[2:], 1)])
    assert (r.received, r.written, r.dead_lettered) == (6, 5, 1), r
    assert pdb.count(pschema, "embedding") == 5
    dead = pdb.rows(f'SELECT document_id, reason_code, reason FROM '
                    f'"{pschema}".dead_letter')
    assert len(dead) == 1, dead
    doc, code, reason = dead[0]
    assert (doc, code) == ("too-big", "bad_row"), dead
    assert "too-big" in reason and "element 2 is 70000" in reason, reason
    assert "halfvec" in reason, reason


def test_auto_is_vector_and_real_stays_real(start, pdb, pschema):
    ef = start("auto", 16)
    r = send(ef.target, [chunk([row("a", 0, 16)], 1)])
    assert r.written == 1
    assert pdb.scalar(f'SELECT value FROM "{pschema}".setting '
                      f"WHERE key = 'vector_type'") == "public.vector(16)"
    ef.stop()

    other = pschema + "_real"
    try:
        ef = start("real", 16, schema=other)
        v = row("a", 0, 16).vector
        r = send(ef.target, [chunk([row("a", 0, 16, vector=v)], 1)])
        assert r.written == 1
        assert pdb.scalar(f'SELECT value FROM "{other}".setting '
                          f"WHERE key = 'vector_type'") == "real[]"
        assert pdb.scalar(f'SELECT vector = %s::real[] FROM '
                          f'"{other}".embedding', (list(v),)) is True
    finally:
        ef.stop()
        pdb.rows(f'DROP SCHEMA IF EXISTS "{other}" CASCADE')


def test_schema_of_another_type_is_refused(start, pdb, pschema):
    ef = start("vector", 16)
    assert send(ef.target, [chunk([row("a", 0, 16)], 1)]).written == 1
    ef.stop()
    ef = start("halfvec", 16, ready=False)
    ef.wait_for_line(r"stores vectors as public\.vector\(16\) but "
                     r"vector_type is halfvec: use another schema")
    assert ef.proc.wait(30) == 1
    # auto takes whatever the schema has
    ef = start("auto", 16)


def test_nearest_neighbour_finds_a_row_as_soon_as_it_is_answered(
        start, pdb, pschema):
    dim = 768
    ef = start("vector", dim)
    rng = random.Random(7)
    background = [row(f"bg{i}", 0, dim,
                      vector=[rng.gauss(0, 1) for _ in range(dim)])
                  for i in range(300)]
    assert send(ef.target, [chunk(background, 1)]).written == 300
    target = [rng.gauss(0, 1) for _ in range(dim)]
    assert send(ef.target, [chunk([row("needle", 0, dim, vector=target)],
                                  1)]).written == 1
    # at once: the UploadResult means committed
    query = "[" + ",".join(repr(f32(x)) for x in target) + "]"
    found = pdb.rows(
        f'SELECT c.document_id FROM "{pschema}".embedding e '
        f'JOIN "{pschema}".chunk c USING (id) '
        f'ORDER BY e.vector OPERATOR(public.<=>) %s::public.vector LIMIT 10',
        (query,))
    assert found[0][0] == "needle", found


@pytest.mark.parametrize("vector_type", ["vector", "halfvec"])
def test_bench_runs_on_every_type(pdb, tmp_path, vector_type):
    out = tmp_path / "bench.json"
    p = subprocess.run(
        [EMBEDFLOW_BIN, "bench", "--database", PGV, "--rows", "600",
         "--dim", "32", "--runs", "1", "--writers", "1", "--row-rows", "80",
         "--chunk-rows", "100", "--batch-rows", "200", "--upsert-ratio",
         "0.25", "--vector_type", vector_type, "--json", str(out)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=600, env=clean_env())
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads(out.read_text())
    names = {r["contender"] for r in doc["results"]}
    assert {"copy", "staged", "row", "embedflow"} <= names, names
    for schema, rows in (("embedflow_bench_copy", 600),
                         ("embedflow_bench_staged", 600),
                         ("embedflow_bench_row", 80),
                         ("embedflow_bench_pipeline", 600)):
        assert pdb.scalar(
            "SELECT format_type (atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attname = 'vector'",
            (f"{schema}.embedding",)) == f"{vector_type}(32)"
        assert pdb.count(schema, "embedding") == rows, schema


def index_def(db, schema):
    """(access method, operator class, its options as indexdef shows
    them) of the schema's ANN index, or None."""
    rows = db.rows(
        "SELECT am.amname, opc.opcname,"
        " array_to_string (c.reloptions, ', ') FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_am am ON am.oid = c.relam "
        "JOIN pg_opclass opc ON opc.oid = i.indclass[0] "
        "WHERE i.indrelid = %s::regclass "
        "AND c.relname = 'embedding_vector_idx'",
        (f'"{schema}".embedding',))
    return rows[0] if rows else None


@pytest.mark.parametrize("vector_type,dim,flags,am,opclass,options", [
    ("vector", 768, ["--index.method", "hnsw", "--index.m", "24",
                     "--index.ef_construction", "80"],
     "hnsw", "vector_cosine_ops", "m=24, ef_construction=80"),
    ("halfvec", 3072, ["--index.method", "hnsw", "--index.metric", "ip"],
     "hnsw", "halfvec_ip_ops", "m=16, ef_construction=64"),
    ("vector", 384, ["--index.method", "ivfflat", "--index.metric", "l2",
                     "--index.lists", "7"],
     "ivfflat", "vector_l2_ops", "lists=7"),
])
def test_index_is_made_as_configured(start, pdb, pschema, vector_type, dim,
                                     flags, am, opclass, options):
    ef = start(vector_type, dim, extra=flags)
    rng = random.Random(3)
    rows = [row(f"r{i}", 0, dim, vector=[rng.gauss(0, 1) for _ in range(dim)])
            for i in range(40)]
    assert send(ef.target, [chunk(rows, 1)]).written == 40
    got = index_def(pdb, pschema)
    assert got is not None
    assert got[0] == am
    assert got == (am, opclass, options)
    # the nearest neighbour of a stored vector is itself, through the index
    op = {"cosine_ops": "<=>", "ip_ops": "<#>", "l2_ops": "<->"}[
        opclass.split("_", 1)[1]]
    query = "[" + ",".join(repr(f32(x)) for x in rows[17].vector) + "]"
    with pdb.conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SET LOCAL enable_seqscan = off")
        if am == "ivfflat":
            cur.execute("SET LOCAL ivfflat.probes = 7")
        sql = (f'SELECT c.document_id FROM "{pschema}".embedding e '
               f'JOIN "{pschema}".chunk c USING (id) ORDER BY e.vector '
               f'OPERATOR(public.{op}) %s::public.{vector_type} LIMIT 10')
        cur.execute("EXPLAIN " + sql, (query,))
        plan = "\n".join(r[0] for r in cur.fetchall())
        assert "embedding_vector_idx" in plan, plan
        cur.execute(sql, (query,))
        found = [r[0] for r in cur.fetchall()]
        cur.execute("COMMIT")
    assert found[0] == "r17", found


def test_a_changed_index_is_reported_and_applied_only_on_demand(
        start, pdb, pschema, tmp_path):
    hnsw = ["--index.method", "hnsw"]
    ef = start("vector", 64, extra=hnsw)
    rows = [row(f"r{i}", 0, 64) for i in range(50)]
    assert send(ef.target, [chunk(rows, 1)]).written == 50
    assert ef.stop() == 0
    assert index_def(pdb, pschema)[0] == "hnsw"

    ivf = ["--index.method", "ivfflat", "--index.lists", "5"]
    ef = start("vector", 64, extra=ivf)
    ef.wait_for_line(
        rf'schema "{pschema}": the index is hnsw cosine m=16 '
        r"ef_construction=64 but the configuration says ivfflat cosine "
        r"lists=5: not applied at start; `embedflow index --apply`")
    assert send(ef.target, [chunk(rows[:5], 1)]).written == 5
    assert ef.stop() == 0
    assert ef.log.count("not applied at start") == 1, ef.log
    assert index_def(pdb, pschema)[0] == "hnsw"       # untouched

    def index_cmd(*args):
        return subprocess.run(
            [EMBEDFLOW_BIN, "index", "--database", PGV, "--schema", pschema,
             "--dim", "64", *args], stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=120, env=clean_env())

    # check tells the same, as information
    p = subprocess.run(
        [EMBEDFLOW_BIN, "check", "--database", PGV, "--schema", pschema,
         "--dim", "64", "--listen", "127.0.0.1:0", *ivf],
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=60, env=clean_env())
    assert p.returncode == 0, p.stdout + p.stderr
    assert "INFO  index: the schema's is hnsw cosine m=16 ef_construction=64, "\
        "the configuration says ivfflat cosine lists=5" in p.stdout, p.stdout

    p = index_cmd(*ivf)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [
        f"schema {pschema}: index hnsw cosine m=16 ef_construction=64",
        "configured: ivfflat cosine lists=5",
        "differs: `embedflow index --apply` (with this configuration) "
        "rebuilds it"]
    assert index_def(pdb, pschema)[0] == "hnsw"

    p = index_cmd("--apply", *ivf)
    assert p.returncode == 0, p.stderr
    assert "index hnsw cosine m=16 ef_construction=64 -> ivfflat cosine " \
        "lists=5" in p.stdout
    assert index_def(pdb, pschema) == ("ivfflat", "vector_cosine_ops",
                                       "lists=5")
    # one index, the new one under the usual name
    assert pdb.scalar("SELECT count(*) FROM pg_indexes WHERE schemaname = %s "
                      "AND indexdef LIKE '%%(vector %%'", (pschema,)) == 1

    ef = start("vector", 64, extra=ivf)
    assert send(ef.target, [chunk(rows[:5], 1)]).written == 5
    assert ef.stop() == 0
    assert "not applied at start" not in ef.log

    p = index_cmd("--apply", *ivf)
    assert p.returncode == 0 and "nothing to do" in p.stdout, p.stdout
    # IVFFlat learns its lists from the rows there: rebuilt on demand
    oid = pdb.scalar("SELECT %s::regclass::oid",
                     (f'"{pschema}".embedding_vector_idx',))
    p = index_cmd("--apply", "--rebuild", *ivf)
    assert p.returncode == 0, p.stderr
    assert "index ivfflat cosine lists=5 -> ivfflat cosine lists=5" \
        in p.stdout, p.stdout
    assert pdb.scalar("SELECT %s::regclass::oid",
                      (f'"{pschema}".embedding_vector_idx',)) != oid
    assert index_def(pdb, pschema) == ("ivfflat", "vector_cosine_ops",
                                       "lists=5")
    assert index_cmd("--rebuild", *ivf).returncode == 2
    p = index_cmd("--apply", "--index.method", "none")
    assert p.returncode == 0, p.stderr
    assert index_def(pdb, pschema) is None
    assert pdb.scalar(f'SELECT value FROM "{pschema}".setting '
                      f"WHERE key = 'index'") == "none"


def test_an_index_pgvector_cannot_make_is_refused(start, pdb, pschema):
    # explicit types: before anything starts
    for vector_type, dim, hint in (
            ("vector", 3072, "use vector_type halfvec (up to 4000), or "
             "index.method none"),
            ("halfvec", 4096, "use index.method none")):
        p = subprocess.run(
            [EMBEDFLOW_BIN, "run", "--database", PGV, "--schema", pschema,
             "--dim", str(dim), "--vector_type", vector_type,
             "--index.method", "hnsw"], stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=60, env=clean_env())
        assert p.returncode == 2, p.stderr
        assert f"pgvector indexes {vector_type} of up to" in p.stderr
        assert hint in p.stderr, p.stderr
    # auto is judged when the schema is made, and nothing is left made
    ef = start("auto", 2500, extra=["--index.method", "hnsw"], ready=False)
    ef.wait_for_line(r"pgvector indexes vector of up to 2000 dimensions "
                     r"and dim is 2500")
    assert ef.proc.wait(30) == 1
    assert pdb.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = %s",
                      (pschema,)) == 0
