"""Loading into an ANN-indexed table through segments (index.segments,
postgres/segments.h, docs/pgvector.md), on a PostgreSQL with pgvector:
a row is found by a nearest-neighbour query as soon as its upload is
answered, full segments are sealed and get their own HNSW index, small
ones are merged, an update of a row in a sealed segment leaves exactly
one version, writers wait while too many rows lack an index, queries
keep working through all of it, and a process killed in the middle of
a build loses nothing and leaves nothing behind."""
import os
import random
import re
import subprocess
import signal
import threading
import time

import psycopg2
import pytest

from conftest import EMBEDFLOW_BIN, Embedflow, clean_env, \
    unique_name
from helpers import chunk, row, scrape, send, wait_until
from pgvector_server import f32, pdb, pgvector_database  # noqa: F401 (pdb: fixture)

PGV = pgvector_database()
DIM = 64


@pytest.fixture
def pschema(request, pdb):
    name = unique_name(request, prefix="seg")
    yield name
    pdb.rows(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def start(pschema):
    started = []

    def run(*extra, ready=True):
        ef = Embedflow(["run", "--database", PGV, "--schema", pschema,
                        "--listen", "127.0.0.1:0", "--writers", "2",
                        "--dim", str(DIM), "--vector_type", "vector",
                        "--index.method", "hnsw",
                        "--actors.index-sealer.check_every", "50ms",
                        *extra])
        started.append(ef)
        if ready:
            ef.wait_ready()
            ef.wait_for_line(r"embedflow: ready")   # every actor started
        return ef

    yield run
    for ef in started:
        if ef.alive():
            assert ef.stop() == 0, ef.log


def vec(rng):
    return [rng.gauss(0, 1) for _ in range(DIM)]


def literal(v):
    return "[" + ",".join(repr(f32(x)) for x in v) + "]"


def nearest(db, schema, v, k=10):
    return [r[0] for r in db.rows(
        f'SELECT c.document_id FROM "{schema}".embedding e '
        f'JOIN "{schema}".chunk c USING (id) '
        f'ORDER BY e.vector OPERATOR(public.<=>) %s::public.vector LIMIT {k}',
        (literal(v),))]


def segments(db, schema):
    return db.rows(f'SELECT id, state, rows FROM "{schema}".segment '
                   f'ORDER BY id')


def settled(db, schema):
    """True once nothing waits for an index: every segment sealed but
    an empty growing one."""
    return all(state == "sealed" or (state == "growing" and db.scalar(
        f'SELECT count(*) FROM "{schema}".embedding_{id}') == 0)
        for id, state, _ in segments(db, schema))


def indexes(db, schema):
    """{table: (access method, valid)} of the schema's ANN indexes."""
    return {t: (am, valid) for t, am, valid in db.rows(
        "SELECT t.relname, a.amname, i.indisvalid FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_class t ON t.oid = i.indrelid "
        "JOIN pg_am a ON a.oid = c.relam "
        "JOIN pg_namespace n ON n.oid = t.relnamespace "
        "WHERE n.nspname = %s AND a.amname IN ('hnsw', 'ivfflat')",
        (schema,))}


def take_an_old_snapshot(conn):
    """Keeps every index build that begins before conn's transaction
    ends in its last phase: CREATE INDEX CONCURRENTLY waits for older
    snapshots."""
    with conn.cursor() as cur:
        cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        cur.execute("SELECT 1")


def builds_held(db):
    """Index builds waiting for an older snapshot."""
    return db.scalar("SELECT count(*) FROM pg_stat_progress_create_index"
                     " WHERE phase = 'waiting for old snapshots'")


def check_one_version_each(db, schema, rows):
    """Every chunk has exactly one embedding, and there are rows of them."""
    assert db.scalar(f'SELECT count(*) FROM "{schema}".chunk') == rows
    assert db.scalar(f'SELECT count(*) FROM "{schema}".embedding') == rows
    assert db.scalar(f'SELECT count(DISTINCT id) FROM "{schema}".embedding') \
        == rows


def test_rows_are_found_at_once_and_sealed_segments_get_their_index(
        start, pdb, pschema):
    ef = start("--index.seal_rows", "400", "--index.seal_idle", "500ms")
    # a new schema: one growing segment, no ANN index on it
    assert segments(pdb, pschema) == [(1, "growing", 0)]
    assert indexes(pdb, pschema) == {}
    rng = random.Random(1)
    sent = 0
    for upload in range(6):
        items = [row(f"u{upload}d{i}", 0, DIM, vector=vec(rng))
                 for i in range(249)]
        needle = vec(rng)
        items.append(row(f"needle{upload}", 0, DIM, vector=needle))
        assert send(ef.target, [chunk(items, 1)]).written == 250
        sent += 250
        # answered means committed and findable, sealed or not
        assert nearest(pdb, pschema, needle, 1) == [f"needle{upload}"]
    wait_until("every full segment sealed", lambda: settled(pdb, pschema))
    check_one_version_each(pdb, pschema, sent)
    segs = segments(pdb, pschema)
    sealed = [s for s in segs if s[1] == "sealed"]
    assert len(sealed) >= 2, segs
    assert sum(s[2] for s in sealed) == sent
    # every sealed segment has its own valid HNSW index, the growing none
    got = indexes(pdb, pschema)
    assert got == {f"embedding_{s[0]}": ("hnsw", True) for s in sealed}, got
    # and a query can read them through it (at a few hundred rows a
    # segment the planner rightly prefers scanning them)
    pdb.rows("SET enable_seqscan = off")
    plan = "\n".join(r[0] for r in pdb.rows(
        f'EXPLAIN SELECT id FROM "{pschema}".embedding ORDER BY vector '
        f'OPERATOR(public.<=>) %s::public.vector LIMIT 10',
        (literal(vec(rng)),)))
    pdb.rows("RESET enable_seqscan")
    for s in sealed:
        assert f"Index Scan using embedding_{s[0]}_vector" in plan, plan
    assert nearest(pdb, pschema, needle, 1) == ["needle5"]


def test_an_update_of_a_sealed_row_leaves_one_version(start, pdb, pschema):
    ef = start("--index.seal_rows", "100", "--index.seal_idle", "300ms")
    rng = random.Random(2)
    first = {i: vec(rng) for i in range(150)}
    assert send(ef.target, [chunk([row("doc", i, DIM, vector=v)
                                   for i, v in first.items()], 1)]).written \
        == 150
    wait_until("sealed", lambda: settled(pdb, pschema))
    old_segment = pdb.scalar(
        f'SELECT e.segment FROM "{pschema}".embedding e JOIN "{pschema}".chunk'
        f' c USING (id) WHERE c.chunk_index = 7')
    # a new version of half the rows: moved to the growing segment
    second = {i: vec(rng) for i in range(0, 150, 2)}
    assert send(ef.target, [chunk([row("doc", i, DIM, vector=v)
                                   for i, v in second.items()], 2)]).written \
        == 75
    check_one_version_each(pdb, pschema, 150)
    for i in (0, 7, 148):
        want = second.get(i, first[i])
        got = pdb.scalar(
            f'SELECT e.vector::text FROM "{pschema}".embedding e '
            f'JOIN "{pschema}".chunk c USING (id) WHERE c.chunk_index = %s',
            (i,))
        assert [float(x) for x in got.strip("[]").split(",")] == \
            pytest.approx([f32(x) for x in want], abs=1e-6)
    assert pdb.scalar(
        f'SELECT e.segment FROM "{pschema}".embedding e JOIN "{pschema}".chunk'
        f' c USING (id) WHERE c.chunk_index = 7') == old_segment
    # and after the update's segment is sealed too
    wait_until("sealed", lambda: settled(pdb, pschema))
    check_one_version_each(pdb, pschema, 150)
    assert nearest(pdb, pschema, second[4], 1) == ["doc"]


# the sealer's line for a merge that swapped in: "segments 3, 4 and 7
# (480 rows) merged into 9 in 0.4 s"
MERGED = (r"index-sealer: segments ((\d+, )*\d+) and \d+ \(\d+ rows\) "
          r"merged into \d+")


def test_small_segments_merge_and_queries_go_on_meanwhile(
        start, pdb, pschema):
    ef = start("--index.seal_rows", "150", "--index.seal_idle", "300ms",
               "--index.max_segments", "2")
    rng = random.Random(3)
    probes = [vec(rng) for _ in range(20)]
    failures, answered = [], [0]
    stop = threading.Event()

    def query_loop():
        conn = psycopg2.connect(PGV)
        conn.autocommit = True
        try:
            while not stop.is_set():
                for p in probes:
                    with conn.cursor() as cur:
                        cur.execute(
                            f'SELECT id FROM "{pschema}".embedding ORDER BY '
                            f'vector OPERATOR(public.<=>) %s::public.vector '
                            f'LIMIT 10', (literal(p),))
                        cur.fetchall()
                    answered[0] += 1
        except psycopg2.Error as e:
            failures.append(e)
        finally:
            conn.close()

    reader = threading.Thread(target=query_loop)
    reader.start()
    try:
        total, latest = 0, {}
        for upload in range(8):
            items = [row(f"m{upload}", i, DIM, vector=vec(rng))
                     for i in range(160)]
            # and new versions of rows sent before, which leave sealed
            # segments while they are being merged
            if upload >= 2:
                items += [row(f"m{upload - 2}", i, DIM, vector=vec(rng))
                          for i in range(0, 160, 5)]
            for it in items:
                latest[(it.document_id, it.chunk_index)] = list(it.vector)
            assert send(ef.target, [chunk(items, 1)]).written == len(items)
            total += 160
        ef.wait_for_line(MERGED, timeout=120)
        wait_until("merged down to max_segments", lambda: settled(
            pdb, pschema) and sum(1 for s in segments(pdb, pschema)
                                  if s[1] == "sealed") <= 2, timeout=120)
    finally:
        stop.set()
        reader.join()
    assert not failures, failures
    assert answered[0] > 0
    # once the load is over, one merge takes every small segment it
    # needs at once, not two at a time
    assert re.search(r"index-sealer: segments \d+, \d+(, \d+)* and \d+ "
                     r"\(\d+ rows\) merged into", ef.log), ef.log
    check_one_version_each(pdb, pschema, total)
    stored = {(d, i): [float(x) for x in v.strip("[]").split(",")]
              for d, i, v in pdb.rows(
                  f'SELECT c.document_id, c.chunk_index, e.vector::text '
                  f'FROM "{pschema}".embedding e '
                  f'JOIN "{pschema}".chunk c USING (id)')}
    assert stored.keys() == latest.keys()
    for key, v in latest.items():
        assert stored[key] == pytest.approx([f32(x) for x in v], abs=1e-6), \
            key
    sealed = [s for s in segments(pdb, pschema) if s[1] == "sealed"]
    assert indexes(pdb, pschema) == {f"embedding_{s[0]}": ("hnsw", True)
                                     for s in sealed}
    # no table is left of the merged segments
    assert pdb.scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = %s "
        "AND c.relname ~ '^embedding_[0-9]+$'", (pschema,)) \
        == len(segments(pdb, pschema))


def test_a_merge_swaps_while_another_segment_is_held_by_its_build(
        start, pdb, pschema):
    """A build (CREATE INDEX CONCURRENTLY) holds its segment's table in
    SHARE UPDATE EXCLUSIVE mode for the whole build. A merge's swap that
    waited for every segment waited for that build, with queries queued
    behind it, and a query's snapshot the build waited for made a
    deadlock. The swap takes only the tables it swaps."""
    ef = start("--index.seal_rows", "150", "--index.seal_idle", "300ms",
               "--index.max_segments", "100")
    rng = random.Random(8)
    for upload in range(3):
        items = [row(f"h{upload}", i, DIM, vector=vec(rng))
                 for i in range(160)]
        assert send(ef.target, [chunk(items, 1)]).written == 160
        wait_until("sealed", lambda: settled(pdb, pschema), timeout=60)
    assert ef.stop() == 0, ef.log
    sealed = [s for s in segments(pdb, pschema) if s[1] == "sealed"]
    growing = [s[0] for s in segments(pdb, pschema) if s[1] == "growing"]
    assert len(sealed) >= 3 and len(growing) == 1
    # the lock a build of the growing segment would hold
    holder = psycopg2.connect(PGV)
    try:
        with holder.cursor() as cur:
            cur.execute(f'LOCK TABLE "{pschema}".embedding_{growing[0]} '
                        f'IN SHARE UPDATE EXCLUSIVE MODE')
        ef = start("--index.seal_rows", "150", "--index.max_segments", "2")
        ef.wait_for_line(MERGED, timeout=60)
        assert "swapping merged segments" not in ef.log, ef.log
    finally:
        holder.rollback()
        holder.close()
    check_one_version_each(pdb, pschema, 480)
    wait_until("merged down to max_segments", lambda: sum(
        1 for s in segments(pdb, pschema) if s[1] == "sealed") <= 2,
        timeout=60)
    check_one_version_each(pdb, pschema, 480)


def test_a_build_waits_for_the_batch_that_began_before_its_rotation(
        start, pdb, pschema):
    """A batch reads which segment is growing as it begins. A rotation
    waits for the batches in their COPY into chunk (it adds a foreign
    key to chunk), and a batch that began meanwhile queues behind it.
    The build of the rotated segment must then wait for that batch and
    index its rows. When the batch locked the segment only at its COPY
    into it, the build began first and its validation inserted the late
    rows one at a time (up to 40 s of a builder in a full-size load)."""
    # seal_idle gives the first batch time to reach its COPY into chunk
    # before the rotation
    ef = start("--index.seal_rows", "1000", "--index.seal_idle", "2s",
               "--metrics", "127.0.0.1:0")
    metrics = ef.wait_for_line(r"metrics on (http://\S+:\d+)/metrics").group(1)
    # batches are slowed in their COPY into chunk by a trigger, once per
    # transaction: the first for 8 s, the later one for 3 s
    pdb.rows(f'CREATE FUNCTION "{pschema}".slow () RETURNS trigger '
             f'LANGUAGE plpgsql AS $$BEGIN '
             f'IF current_setting (\'embedflow_test.slept\', true) '
             f'IS DISTINCT FROM \'yes\' THEN '
             f'PERFORM set_config (\'embedflow_test.slept\', \'yes\', true);'
             f' PERFORM pg_sleep (CASE WHEN NEW.document_id = \'first\' '
             f'THEN 8 ELSE 3 END); END IF; RETURN NEW; END$$')
    pdb.rows(f'CREATE TRIGGER slow BEFORE INSERT ON "{pschema}".chunk '
             f'FOR EACH ROW WHEN (NEW.document_id IN (\'first\', '
             f'\'late-0\', \'late-2\', \'late-3\')) '
             f'EXECUTE FUNCTION "{pschema}".slow ()')
    rng = random.Random(9)
    growing = pdb.scalar(f'SELECT id FROM "{pschema}".segment '
                         f'WHERE state = \'growing\'')
    # rows for both writers (hash(document_id) % 2): each prepares its
    # statements on its first batch, outside the batch's transaction
    assert send(ef.target, [chunk(
        [row(doc, i, DIM, vector=vec(rng)) for doc in ("quick", "late-4")
         for i in range(25)], 1)]).written == 50
    results = []

    def upload(items):
        results.append(send(ef.target, [chunk(items, 1)]).written)

    def waiting_for_chunk():
        return pdb.scalar(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c "
            "ON c.oid = l.relation JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE NOT l.granted "
            "AND n.nspname = %s AND c.relname = 'chunk'", (pschema,))

    first = threading.Thread(target=upload, args=(
        [row("first", 0, DIM, vector=vec(rng))],))
    first.start()
    # documents that hash(document_id) % 2 sends to the other writer
    # than "first"'s, which is busy with it
    late = [row(f"late-{d}", 0, DIM, vector=vec(rng)) for d in (0, 2, 3)]
    then = threading.Thread(target=upload, args=(late,))
    holder = psycopg2.connect(PGV)
    try:
        wait_until("the rotation waiting for the first batch",
                   lambda: waiting_for_chunk() == 1, timeout=10)
        then.start()
        wait_until("the later batch queued behind the rotation",
                   lambda: waiting_for_chunk() == 2, timeout=10)

        def build_phase():
            phase = pdb.scalar(
                "SELECT phase FROM pg_stat_progress_create_index"
                " WHERE relid = %s::regclass",
                (f'"{pschema}".embedding_{growing}',))
            return phase if phase not in (None, "initializing") else None
        phase = wait_until("the build of the rotated segment", build_phase,
                           timeout=10)
        assert phase == "waiting for writers before build", phase
        # an old snapshot keeps the build in its last phase once both
        # batches commit
        take_an_old_snapshot(holder)
    finally:
        first.join()
        if then.ident:
            then.join()
    try:
        assert sorted(results) == [1, 3]
        wait_until("the build waiting for the old snapshot",
                   lambda: builds_held(pdb))
        # the rows of both batches await the index, though the rotation
        # counted the segment before they came: what `check` reports (and
        # `bench` measures "searchable" by), and the sealer's gauge
        check = subprocess.run(
            [EMBEDFLOW_BIN, "check", "--database", PGV, "--schema", pschema,
             "--dim", str(DIM), "--vector_type", "vector", "--index.method",
             "hnsw", "--listen", "127.0.0.1:0"],
            capture_output=True, text=True, timeout=60, env=clean_env())
        assert re.search(r"\b54 rows scanned exactly", check.stdout), \
            check.stdout + check.stderr
        wait_until("the sealer's gauge", lambda: scrape(metrics).get(
            'embedflow_index_unindexed_rows{actor="index-sealer"}') == 54)
    finally:
        holder.rollback()
        holder.close()
    wait_until("sealed", lambda: settled(pdb, pschema))
    check_one_version_each(pdb, pschema, 54)
    # every batch that began before the rotation wrote into the segment
    # that was built
    assert pdb.scalar(
        f'SELECT count(*) FROM "{pschema}".embedding_{growing}') == 54


def test_writers_wait_while_too_many_rows_lack_an_index(start, pdb, pschema):
    ef = start("--index.seal_rows", "200", "--index.max_unindexed_rows",
               "300", "--index.m", "32", "--index.ef_construction", "400",
               "--metrics", "127.0.0.1:0")
    base = ef.wait_for_line(r"metrics on (http://\S+:\d+)/metrics").group(1)
    rng = random.Random(4)
    items = [row("w", i, DIM, vector=vec(rng)) for i in range(3000)]
    # uploads one after another, so that the sealer counts between them
    # (writers learn the backlog from its counts)
    for i in range(0, 3000, 100):
        r = send(ef.target, [chunk(items[i:i + 100], 1)])
        assert (r.written, r.dead_lettered) == (100, 0)
    ef.wait_for_line(r"waiting for ANN indexes: \d+ rows wait for their ANN "
                     r"index, more than index.max_unindexed_rows \(300\)")
    ef.wait_for_line(r"ANN indexes caught up: writing again")
    check_one_version_each(pdb, pschema, 3000)
    m = scrape(base)
    waited = sum(v for k, v in m.items()
                 if k.startswith("embedflow_writer_index_wait_seconds_total{"))
    assert waited > 0, m
    assert m['embedflow_index_build_seconds_count{actor="index-sealer"}'] >= 1
    wait_until("sealed", lambda: settled(pdb, pschema))

    def gauges_agree():
        # the sealer sets them at each step; a merge may end between
        m = scrape(base)
        return m['embedflow_index_unindexed_rows{actor="index-sealer"}'] \
            == 0 and \
            m['embedflow_index_sealed_segments{actor="index-sealer"}'] == \
            sum(1 for s in segments(pdb, pschema) if s[1] == "sealed")
    wait_until("the gauges agree with the segments", gauges_agree)


def test_writers_held_back_do_not_make_the_growing_segment_idle(
        start, pdb, pschema):
    """While the backlog holds the writers back no rows come, but the
    load has not paused: the growing segment must not be sealed as
    idle. Sealed then it became one more small segment (700 rows in a
    full-size load), one more index scan for every query."""
    ef = start("--index.seal_rows", "200", "--index.max_unindexed_rows",
               "300", "--index.seal_idle", "500ms")
    rng = random.Random(11)
    # one document: one writer takes every batch, in order
    items = [row("held", i, DIM, vector=vec(rng)) for i in range(500)]
    # an old snapshot keeps every build in its last phase (CREATE INDEX
    # CONCURRENTLY waits for older snapshots): the backlog stays
    holder = psycopg2.connect(PGV)
    uploads = []

    def upload_the_rest():
        for i in range(200, 500, 50):
            uploads.append(send(ef.target, [chunk(items[i:i + 50], 1)])
                           .written)
    rest = threading.Thread(target=upload_the_rest)
    try:
        take_an_old_snapshot(holder)
        for i in range(0, 200, 50):
            assert send(ef.target, [chunk(items[i:i + 50], 1)]).written \
                == 50
        wait_until("a build waiting for the old snapshot",
                   lambda: builds_held(pdb))
        # 50 rows at a time into the growing segment until more than 300
        # wait: held with fewer than seal_rows in it
        rest.start()
        held = ef.wait_for_line(r"waiting for ANN indexes: (\d+) rows wait")
        assert int(held.group(1)) > 300
        growing = pdb.scalar(f'SELECT id FROM "{pschema}".segment '
                             f'WHERE state = \'growing\'')
        assert 0 < pdb.scalar(
            f'SELECT count(*) FROM "{pschema}".embedding_{growing}') < 200
        # held for four times seal_idle: not sealed
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert "(idle)" not in ef.log, ef.log
            assert pdb.scalar(
                f'SELECT state FROM "{pschema}".segment WHERE id = %s',
                (growing,)) == "growing"
            time.sleep(0.1)
    finally:
        holder.rollback()
        holder.close()
    rest.join(timeout=60)
    assert uploads == [50] * 6
    ef.wait_for_line(r"ANN indexes caught up: writing again")
    wait_until("sealed", lambda: settled(pdb, pschema), timeout=60)
    check_one_version_each(pdb, pschema, 500)


def merge_tables(conn, schema):
    """Segment tables no segment row names yet: merges under way."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r' "
            "AND c.relname ~ '^embedding_[0-9]+$' "
            "AND substring (c.relname FROM 11)::int NOT IN "
            f'(SELECT id FROM "{schema}".segment)', (schema,))
        return cur.fetchone()[0]


def test_no_merge_starts_between_the_builds_of_a_load(start, pdb, pschema):
    """When a build ends, the writers it held back resume, and for a
    moment no row awaits an index and the growing segment is not half
    full. Merges started then took both builders for a minute while the
    next full segment waited, and the writers with it (a full-size load
    took 170 s instead of ~105 s). Writers held back a moment ago mean
    the load goes on: no merge starts until it is over."""
    ef = start("--index.seal_rows", "200", "--index.max_unindexed_rows",
               "220", "--index.max_segments", "1")
    rng = random.Random(12)
    # one document: one writer takes every batch, in order
    items = [row("between", i, DIM, vector=vec(rng)) for i in range(1000)]

    def upload(lo, hi):
        for i in range(lo, hi, 50):
            assert send(ef.target, [chunk(items[i:i + 50], 1)]).written == 50

    # a first load, merged down to one sealed segment once it is over
    upload(0, 400)
    wait_until("one sealed segment", lambda: settled(pdb, pschema) and sorted(
        s[1] for s in segments(pdb, pschema)) == ["growing", "sealed"],
        timeout=60)
    # a second load: its first full segment's build held by an old
    # snapshot, the writers held with a quarter of seal_rows growing
    holder = psycopg2.connect(PGV)
    watcher = psycopg2.connect(PGV)
    watcher.autocommit = True
    merge_seen, rest_done = [], threading.Event()
    rest = threading.Thread(target=lambda: (upload(650, 1000),
                                            rest_done.set()))
    try:
        take_an_old_snapshot(holder)
        upload(400, 600)
        wait_until("a build waiting for the old snapshot",
                   lambda: builds_held(pdb))
        mark = len(ef.log)
        upload(600, 650)
        rest.start()
        wait_until("writers held back",
                   lambda: "waiting for ANN indexes" in ef.log[mark:])
        growing = pdb.scalar(f'SELECT id FROM "{pschema}".segment '
                             f"WHERE state = 'growing'")
        assert 0 < pdb.scalar(
            f'SELECT count(*) FROM "{pschema}".embedding_{growing}') < 100
    finally:
        holder.rollback()
        holder.close()
    # the build ends: two sealed segments, max_segments 1, and the load
    # goes on until the rest is written
    while not rest_done.is_set() and rest.is_alive():
        if merge_tables(watcher, pschema):
            merge_seen.append(rest_done.is_set())
            break
        time.sleep(0.01)
    rest.join(timeout=60)
    assert rest_done.is_set()
    assert merge_seen in ([], [True]), ef.log[mark:]
    # once it is over, the merges come
    wait_until("one sealed segment", lambda: settled(pdb, pschema) and sorted(
        s[1] for s in segments(pdb, pschema)) == ["growing", "sealed"],
        timeout=60)
    watcher.close()
    check_one_version_each(pdb, pschema, 1000)


def test_a_kill_in_the_middle_of_a_build_loses_nothing(start, pdb, pschema):
    slow = ("--index.seal_rows", "500", "--index.m", "48",
            "--index.ef_construction", "800")
    ef = start(*slow)
    rng = random.Random(5)
    items = [row("k", i, DIM, vector=vec(rng)) for i in range(1200)]
    assert send(ef.target, [chunk(items, 1)]).written == 1200
    wait_until("a build running", lambda: pdb.scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE "
        "'CREATE INDEX CONCURRENTLY embedding_%%'"))
    ef.send_signal(signal.SIGKILL)
    ef.proc.wait(timeout=30)
    ef.expect_exit = -signal.SIGKILL
    # the cut build left an invalid index behind (or nothing, if the
    # server had not got that far): the next sealer drops and redoes it
    ef = start(*slow)
    wait_until("sealed again", lambda: settled(pdb, pschema)
               if len(segments(pdb, pschema)) > 1 else False, timeout=120)
    got = indexes(pdb, pschema)
    assert got and all(v == ("hnsw", True) for v in got.values()), got
    check_one_version_each(pdb, pschema, 1200)
    # resending what was answered changes nothing
    assert send(ef.target, [chunk(items, 2)]).written == 1200
    check_one_version_each(pdb, pschema, 1200)


def test_index_apply_rebuilds_every_sealed_segment(start, pdb, pschema):
    ef = start("--index.seal_rows", "100", "--index.seal_idle", "300ms")
    rng = random.Random(6)
    assert send(ef.target, [chunk([row("a", i, DIM, vector=vec(rng))
                                   for i in range(300)], 1)]).written == 300
    wait_until("sealed", lambda: settled(pdb, pschema))
    assert ef.stop() == 0, ef.log
    sealed = sum(1 for s in segments(pdb, pschema) if s[1] == "sealed")
    p = subprocess.run(
        [EMBEDFLOW_BIN, "check", "--database", PGV, "--schema", pschema,
         "--dim", str(DIM), "--index.method", "hnsw"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        env=clean_env())
    assert f"INFO  segments: {sealed} sealed with their index (300 rows), 0 " \
        "rows scanned exactly" in p.stdout + p.stderr, p.stdout + p.stderr
    ivf = ["--index.method", "ivfflat", "--index.lists", "3"]
    p = subprocess.run(
        [EMBEDFLOW_BIN, "index", "--database", PGV, "--schema", pschema,
         "--dim", str(DIM), "--apply", *ivf], stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=300, env=clean_env())
    assert p.returncode == 0, p.stdout + p.stderr
    assert "index hnsw cosine m=16 ef_construction=64 -> ivfflat cosine " \
        "lists=3" in p.stdout, p.stdout
    sealed = [s[0] for s in segments(pdb, pschema) if s[1] == "sealed"]
    assert indexes(pdb, pschema) == {f"embedding_{s}": ("ivfflat", True)
                                     for s in sealed}
    # segments sealed from now on get the applied index
    ef = start("--index.seal_rows", "100", "--index.seal_idle", "300ms", *ivf)
    assert send(ef.target, [chunk([row("b", i, DIM, vector=vec(rng))
                                   for i in range(150)], 1)]).written == 150
    wait_until("sealed", lambda: settled(pdb, pschema))
    sealed = [s[0] for s in segments(pdb, pschema) if s[1] == "sealed"]
    assert indexes(pdb, pschema) == {f"embedding_{s}": ("ivfflat", True)
                                     for s in sealed}
    check_one_version_each(pdb, pschema, 450)


def backend_cpu_seconds(db, schema):
    """utime + stime of the server sessions whose last statement named
    schema: this test's embedflow, whatever else runs on the server."""
    pids = [r[0] for r in db.rows(
        "SELECT pid FROM pg_stat_activity WHERE query LIKE %s"
        " AND pid <> pg_backend_pid ()", (f"%{schema}%",))]
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK"), len(pids)


def test_an_idle_sealer_looks_seldom_and_wakes_for_rows(start, pdb, pschema):
    ef = start("--index.seal_rows", "100")
    rng = random.Random(6)
    r = send(ef.target, [chunk([row("i", i, DIM, vector=vec(rng))
                                for i in range(50)], 1)])
    assert r.written == 50
    # nothing comes, nothing builds: its looks (a few statements each,
    # every check_every = 50 ms when busy) thin out to one a second,
    # doubling the pause each time (about 2 s to get there)
    time.sleep(3)
    before, sessions = backend_cpu_seconds(pdb, pschema)
    assert sessions >= 1
    time.sleep(8)   # the quantity measured is CPU over a span of time
    after, _ = backend_cpu_seconds(pdb, pschema)
    # looking every 50 ms took ~0.25 s of server CPU in 8 s here
    assert after - before <= 0.06, (before, after)
    # rows wake it: the growing segment is sealed and indexed
    r = send(ef.target, [chunk([row("j", i, DIM, vector=vec(rng))
                                for i in range(100)], 1)])
    assert r.written == 100
    wait_until("a sealed segment", lambda: any(
        s[1] == "sealed" for s in segments(pdb, pschema)), timeout=10)


def test_a_paused_load_is_sealed_without_waiting_for_seal_idle(
        start, pdb, pschema):
    # an hour of seal_idle: only the pause rule seals 500 rows of 1,000
    ef = start("--index.seal_rows", "1000", "--index.seal_idle", "1h")
    rng = random.Random(7)
    r = send(ef.target, [chunk([row("p", i, DIM, vector=vec(rng))
                                for i in range(500)], 1)])
    assert r.written == 500
    ef.wait_for_line(r"segment \d+ sealed at 500 rows \(the load paused\)")
    wait_until("its index", lambda: settled(pdb, pschema), timeout=30)
    check_one_version_each(pdb, pschema, 500)
    # a trickle below a tenth of seal_rows stays in the growing segment:
    # no event says that nothing happened, so wait past the pause (2 s)
    # and the idle looks (1 s) and see
    r = send(ef.target, [chunk([row("q", i, DIM, vector=vec(rng))
                                for i in range(20)], 1)])
    assert r.written == 20
    time.sleep(5)
    growing = [id for id, state, _ in segments(pdb, pschema)
               if state == "growing"]
    assert pdb.scalar(
        f'SELECT count(*) FROM "{pschema}".embedding_{growing[0]}') == 20
    assert "sealed at 20 rows" not in ef.log


def test_a_paused_load_is_sealed_while_another_segment_builds(
        start, pdb, pschema):
    """At the end of a load the builders are still building its last
    full segments; the first one free takes the tail, rather than
    waiting for all of them or for seal_idle."""
    ef = start("--index.seal_rows", "1000", "--index.seal_idle", "1h")
    rng = random.Random(12)
    # an old snapshot keeps the full segment's build in its last phase
    holder = psycopg2.connect(PGV)
    try:
        take_an_old_snapshot(holder)
        r = send(ef.target, [chunk([row("f", i, DIM, vector=vec(rng))
                                    for i in range(1000)], 1)])
        assert r.written == 1000
        wait_until("the full segment's build held",
                   lambda: builds_held(pdb))
        r = send(ef.target, [chunk([row("t", i, DIM, vector=vec(rng))
                                    for i in range(500)], 1)])
        assert r.written == 500
        ef.wait_for_line(r"segment \d+ sealed at 500 rows \(the load "
                         r"paused\)", timeout=15)
        # the tail builds beside the held one
        wait_until("two builds", lambda: pdb.scalar(
            "SELECT count(*) FROM pg_stat_progress_create_index") == 2)
    finally:
        holder.rollback()
        holder.close()
    wait_until("their indexes", lambda: settled(pdb, pschema), timeout=30)
    check_one_version_each(pdb, pschema, 1500)


def test_builds_take_the_parallel_workers_configured(start, pdb, pschema):
    """actors.index-sealer.build_workers is each build's
    max_parallel_maintenance_workers. pgvector says how many workers a
    parallel build launched (DEBUG1), which embedflow logs with
    --verbose; min_parallel_table_scan_size 0 lets a small segment be
    built in parallel at all."""
    debug = (PGV + " options='-c client_min_messages=debug1"
             " -c min_parallel_table_scan_size=0'")
    rng = random.Random(11)
    for workers in (1, 0):
        ef = start("--database", debug, "--verbose",
                   "--index.seal_rows", "1000",
                   "--actors.index-sealer.build_workers", str(workers))
        r = send(ef.target, [chunk([row(f"w{workers}", i, DIM,
                                        vector=vec(rng))
                                    for i in range(1000)], 1)])
        assert r.written == 1000
        ef.wait_for_line(r"segment \d+ indexed in")
        assert ef.stop() == 0, ef.log
        launched = re.findall(r"using (\d+) parallel workers", ef.log)
        assert launched == (["1"] if workers else []), ef.log
