"""distribution: citus on a real cluster (tests/citus.sh: a coordinator
and two workers, each its own PostgreSQL; skipped with its message when
there is no Citus): uploads through `embedflow run` land on both
workers' shards, an update keeps one version of a document's chunks and
their ids, unchanged re-sends write nothing, dead letters and the
invalidation outbox stay on the coordinator, every worker a batch
writes commits in two phases, the ANN index is on every shard of
embedding and answers a nearest-neighbour query, a worker restarted in
the middle of an upload loses and duplicates nothing, `embedflow check`
lists the nodes, and a schema made for one PostgreSQL is refused rather
than converted, until the SQL of docs/scaling.md converts it."""
import json
import os
import re
import subprocess

import psycopg2
import pytest

from conftest import EMBEDFLOW_BIN, Database, Embedflow, clean_env, \
    unique_name
from helpers import BackgroundUpload, chunk, is_uuid7, row, scrape, send, \
    stream, \
    wait_until
from pullhelp import AiServer, finish, runs
from test_invalidation import CacheServer, calls, delivered, free_port

CITUS_DIR = os.environ.get("EF_TEST_CITUS_DIR", "")
CITUS_SH = os.environ.get("EF_TEST_CITUS_SH", "")
DIM = 16
ROWS = 20000            # a few seconds of upload: the restart is in it
HERE = os.path.dirname(os.path.abspath(__file__))
SCALING_MD = os.path.join(HERE, "..", "..", "docs", "scaling.md")


def _citus_database():
    skip = os.path.join(CITUS_DIR, "skip")
    if not CITUS_DIR or os.path.exists(skip):
        why = open(skip).read().strip() if CITUS_DIR and \
            os.path.exists(skip) \
            else "Citus is not available: EF_TEST_CITUS_DIR is not set " \
                 "(run through ctest)"
        pytest.skip(why, allow_module_level=True)
    return open(os.path.join(CITUS_DIR, "conninfo")).read().strip()


CITUS = _citus_database()
# a cluster the user names (EF_TEST_CITUS) is not ours to restart
OWN_CLUSTER = os.path.exists(os.path.join(CITUS_DIR, "bindir"))


@pytest.fixture(scope="module")
def cdb():
    database = Database(CITUS)
    yield database
    database.close()


@pytest.fixture
def cschema(request, cdb):
    name = unique_name(request, prefix="cit")
    yield name
    # the first statement after a worker's restart may meet this
    # session's old connection to it
    for attempt in range(3):
        try:
            cdb.rows(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
            break
        except psycopg2.Error:
            if attempt == 2:
                raise


@pytest.fixture
def start(cschema):
    """Starts `embedflow run` on the coordinator with distribution
    citus; each one still running at teardown must exit 0 on SIGTERM."""
    started = []

    def run(schema=None, extra=(), ready=True, distribution="citus",
            database=CITUS, env=None):
        ef = Embedflow(["run", "--database", database,
                        "--schema", schema or cschema,
                        "--listen", "127.0.0.1:0", "--writers", "2",
                        "--dim", str(DIM), "--distribution", distribution,
                        *extra], env=env)
        started.append(ef)
        return ef.wait_ready() if ready else ef

    yield run
    for ef in started:
        if ef.alive():
            assert ef.stop() == 0, ef.log


def rows_per_worker(db, schema, table):
    """{worker: rows of schema.table in its shards}, counted on the
    shards themselves."""
    got = db.rows(
        "SELECT s.nodename, sum (r.result::bigint)"
        " FROM run_command_on_shards (%s, 'SELECT count(*) FROM %%s') r"
        " JOIN citus_shards s USING (shardid) GROUP BY 1",
        (f'"{schema}".{table}',))
    return {node: int(n) for node, n in got}


def versions(db, schema, doc):
    """[(chunk_index, chunk id, content, chunk.updated_at,
    embedding.updated_at)] of doc, with the embedding its key joins."""
    return db.rows(
        f'SELECT c.chunk_index, c.id::text, c.content, c.updated_at,'
        f' e.updated_at FROM "{schema}".chunk c'
        f' JOIN "{schema}".embedding e USING (document_id, id)'
        f' WHERE c.document_id = %s ORDER BY 1', (doc,))


def test_rows_land_on_both_workers_and_an_update_keeps_one_version(
        start, cdb, cschema):
    ef = start(extra=["--batch-rows", "100"])
    chunks = stream(2000, DIM, 200, doc_prefix="d")
    r = send(ef.target, chunks)
    assert (r.received, r.written, r.dead_lettered) == (2000, 2000, 0)

    assert cdb.scalar(
        "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid IN"
        " (%s::regclass, %s::regclass) AND colocationid = (SELECT"
        " colocationid FROM pg_dist_partition WHERE logicalrelid ="
        " %s::regclass)",
        (f'"{cschema}".chunk', f'"{cschema}".embedding',
         f'"{cschema}".chunk')) == 2
    for table in ("chunk", "embedding"):
        per = rows_per_worker(cdb, cschema, table)
        assert len(per) == 2 and sum(per.values()) == 2000, (table, per)
        assert min(per.values()) > 0, (table, per)
    # every embedding row has its chunk row, on the same shard
    assert cdb.scalar(
        f'SELECT count(*) FROM "{cschema}".chunk c JOIN "{cschema}".embedding'
        f' e USING (document_id, id)') == 2000
    ids = [i for (i,) in cdb.rows(f'SELECT id::text FROM "{cschema}".chunk')]
    assert all(is_uuid7(i) for i in ids)

    doc = chunks[0].items[0].document_id
    before = versions(cdb, cschema, doc)
    assert before
    # The unchanged re-send of everything writes nothing.
    r = send(ef.target, chunks)
    assert (r.received, r.dead_lettered) == (2000, 0)
    assert versions(cdb, cschema, doc) == before

    # A new version of the document's first chunk (and an untouched
    # second one): one row per chunk, the first chunk keeps its id and
    # gets the new content, the second is not rewritten.
    ours = [it for c in chunks for it in c.items if it.document_id == doc]
    changed = row(doc, ours[0].chunk_index, DIM, content="v2", seed=7)
    r = send(ef.target, [chunk([changed, ours[1]], 1)])
    assert (r.received, r.dead_lettered) == (2, 0)
    after = versions(cdb, cschema, doc)
    assert len(after) == len(before)
    assert after[0][1] == before[0][1] and after[0][2] == "v2"
    assert after[0][3] > before[0][3] and after[0][4] > before[0][4]
    assert after[1:] == before[1:]
    assert cdb.count(cschema, "chunk") == 2000
    assert cdb.count(cschema, "embedding") == 2000

    # Two versions of one key in one stream: the later one wins.
    last = row(doc, ours[0].chunk_index, DIM, content="v4", seed=9)
    r = send(ef.target, [chunk([row(doc, ours[0].chunk_index, DIM,
                                    content="v3", seed=8)], 1),
                         chunk([last], 2)])
    assert versions(cdb, cschema, doc)[0][2] == "v4"
    assert cdb.count(cschema, "chunk") == 2000


def shard_positions(db, schema, docs):
    """{document_id: the position of its chunk shard among the table's
    shards in hash order}, as the coordinator places it."""
    got = db.rows(
        "WITH s AS (SELECT shardid, row_number () OVER"
        "  (ORDER BY shardminvalue::int) - 1 AS at FROM pg_dist_shard"
        "  WHERE logicalrelid = %s::regclass)"
        " SELECT d, s.at FROM unnest (%s::text[]) d JOIN s ON s.shardid ="
        "  get_shard_id_for_distribution_column (%s, d)",
        (f'"{schema}".chunk', list(docs), f'"{schema}".chunk'))
    return {d: int(at) for d, at in got}


def test_a_writer_gets_the_documents_of_its_own_shards(start, cdb, cschema):
    """With distribution citus the splitter sends a document to writer
    (its shard's position) % writers, so a writer's batches touch only
    its own shards: documents of even shards are all written by writer
    0, and in a mixed upload each writer writes exactly the rows of its
    shards. Counts, updates and last-write-wins are unchanged, and the
    writers keep their shard connections between batches."""
    # its sessions' name, to tell them from other clients of the cluster
    appname = f"ef-{cschema}"[:60]
    ef = start(extra=["--metrics", "127.0.0.1:0", "--batch-rows", "50"],
               env=clean_env(PGAPPNAME=appname))
    base = ef.wait_for_line(r"metrics on (http://\S+:\d+)/metrics").group(1)
    ef.wait_for_line(r"routing to 2 instance\(s\) of db-writer by Citus "
                     r"shard \(32 shards\)")
    candidates = [f"doc-{i}-ü日" for i in range(400)]
    at = shard_positions(cdb, cschema, candidates)
    assert len(at) == len(candidates)
    even = [d for d in candidates[200:] if at[d] % 2 == 0][:60]
    assert len(even) == 60

    def written():
        s = scrape(base)
        return [s[f'embedflow_actor_rows_out_total{{actor='
                  f'"db-writer[{w}]"}}'] for w in (0, 1)]

    items = [row(d, i, DIM) for d in even for i in range(5)]
    r = send(ef.target, [chunk(items[k:k + 40], k // 40 + 1)
                         for k in range(0, len(items), 40)])
    assert (r.received, r.written, r.dead_lettered) == (300, 300, 0)
    assert written() == [300, 0]

    # every document, both kinds of shards, with a second version of
    # some keys later in the same stream: the later one wins, and each
    # writer wrote what its shards hold
    docs = candidates[:100]
    items = [row(d, i, DIM) for d in docs for i in range(3)]
    items += [row(d, 0, DIM, content="v2", seed=1) for d in docs[:30]]
    r = send(ef.target, [chunk(items[k:k + 30], k // 30 + 1)
                         for k in range(0, len(items), 30)])
    assert (r.received, r.dead_lettered) == (330, 0)
    want = [300, 0]
    for d in docs:
        want[at[d] % 2] += 3 + (d in docs[:30])
    assert written() == want
    assert cdb.scalar(
        f'SELECT count(*) FROM "{cschema}".chunk WHERE document_id ='
        f' ANY (%s)', (docs,)) == 300
    assert cdb.scalar(
        f'SELECT count(*) FROM "{cschema}".chunk WHERE content = %s',
        ("v2",)) == 30
    assert cdb.scalar(
        f'SELECT count(*) FROM "{cschema}".chunk c JOIN "{cschema}".embedding'
        f' e USING (document_id, id)') == cdb.count(cschema, "chunk")

    # Each writer's session keeps its shard connections between batches
    # (Citus keeps one per worker by default): idle on the workers, named
    # by the session's global pid (node id * 10^10 + pid). The writers
    # wrote about 16 shards each, 16 on each worker.
    gpids = [g for (g,) in cdb.rows(
        "SELECT (n.nodeid::bigint * 10000000000 + a.pid)::text"
        " FROM pg_stat_activity a, pg_dist_node n WHERE n.groupid = 0"
        " AND a.application_name = %s", (appname,))]
    assert gpids
    names = ",".join(f"'citus_internal gpid={g}'" for g in gpids)
    kept = cdb.rows(
        "SELECT nodename, result FROM run_command_on_workers (%s)",
        ("SELECT string_agg (n::text, ',' ORDER BY n DESC) FROM (SELECT"
         " count(*) n FROM pg_stat_activity WHERE application_name IN"
         f" ({names}) GROUP BY application_name) x",))
    assert len(kept) == 2, kept
    for node, counts in kept:
        # a writer's session holds the most (the shards are placed on the
        # workers in turn, so each writer may touch only one of them)
        assert int(counts.split(",")[0]) >= 4, (node, counts)


def test_dead_letters_and_the_outbox_stay_on_the_coordinator(
        start, cdb, cschema, tmp_path):
    record = str(tmp_path / "calls.jsonl")
    port = free_port()
    api = CacheServer(port, record)
    try:
        ef = start(extra=["--api-server", f"127.0.0.1:{port}"])
        good = [row(f"g-{i}", 0, DIM) for i in range(40)]
        bad = row("bad-dim", 0, DIM + 1)
        r = send(ef.target, [chunk(good[:20] + [bad] + good[20:], 1)],
                 source="s1")
        assert (r.received, r.written, r.dead_lettered) == (41, 40, 1)
        dead = cdb.rows(f'SELECT document_id, reason FROM "{cschema}".'
                        f'dead_letter')
        assert len(dead) == 1 and dead[0][0] == "bad-dim", dead
        assert re.search(r"dim", dead[0][1]), dead
        want = {("s1", f"g-{i}") for i in range(40)}
        wait_until("every changed document invalidated", lambda:
                   want <= delivered(record)
                   and cdb.count(cschema, "invalidation_outbox") == 0)
        # plain tables of the coordinator, not distributed
        assert cdb.scalar(
            "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid IN"
            " (%s::regclass, %s::regclass)",
            (f'"{cschema}".dead_letter',
             f'"{cschema}".invalidation_outbox')) == 0
    finally:
        api.stop()


def test_every_worker_that_a_batch_writes_commits_in_two_phases(
        start, cschema):
    """Citus commits with PREPARE TRANSACTION / COMMIT PREPARED only the
    worker connections it knows wrote; any other gets a plain COMMIT
    after the coordinator's own, whose failure is only a WARNING (a
    batch reported written without its rows on that worker). A
    connection that read a shard before writing it is not known to have
    written: the key lookup runs outside the batch's transaction. The
    coordinator says which command it sends to which worker when
    citus.log_remote_commands is on; embedflow logs notices with
    --verbose."""
    ef = start(extra=["--batch-rows", "100", "--verbose"],
               database=CITUS + " options='-c citus.log_remote_commands=on'")
    chunks = stream(400, DIM, 100, doc_prefix="t")
    assert send(ef.target, chunks).written == 400
    # a changed row goes through staging and the upsert
    doc = chunks[0].items[0].document_id
    r = send(ef.target, [chunk([row(doc, 0, DIM, content="v2", seed=3)], 1)])
    assert (r.written, r.dead_lettered) == (1, 0)
    issued = re.findall(r"postgres: NOTICE:\s+issuing (COMMIT PREPARED|"
                        r"COMMIT|PREPARE TRANSACTION|COPY \S+)", ef.log)
    assert any(c.startswith("COPY") for c in issued), ef.log
    assert issued.count("PREPARE TRANSACTION") > 0, issued
    assert "COMMIT" not in issued, \
        "a worker's part of a batch was committed in one phase\n" + ef.log


@pytest.mark.skipif(not OWN_CLUSTER,
                    reason="a cluster EF_TEST_CITUS names is not restarted")
def test_worker_restarted_mid_upload_loses_and_duplicates_nothing(
        start, cdb, cschema):
    ef = start(extra=["--batch-rows", "100",
                      "--actors.db-writer.retry_cap", "500ms"])
    chunks = stream(ROWS, DIM, 100, doc_prefix="w")
    upload = BackgroundUpload(ef.target, chunks)
    # the writers make the schema as they connect, maybe after 'listening'
    wait_until("the first rows", lambda: cdb.scalar(
        "SELECT to_regclass (%s) IS NOT NULL", (f'"{cschema}".chunk',))
        and cdb.count(cschema, "chunk") > 0)
    subprocess.run([CITUS_SH, "restart-worker", CITUS_DIR, "-", "1"],
                   check=True, timeout=120)
    err = upload.wait()
    assert err is None, err.details()
    r = upload.outcome["result"]
    assert (r.received, r.written, r.dead_lettered) == (ROWS, ROWS, 0)
    # the writers retry, and dead-letter nothing: the loss of a worker is
    # transient (Citus passes it on as XX000 with the worker's words)
    assert re.search(r"write of \d+ rows failed .*retrying", ef.log), \
        "no write met the restart: make the upload longer\n" + ef.log
    # A batch whose COMMIT PREPARED the restart interrupted is committed
    # by Citus' recovery (its maintenance daemon, every
    # citus.recover_2pc_interval): run it now instead of waiting. A
    # statement may first meet this session's own connection to the
    # restarted worker, closed under it.
    def recovered():
        try:
            cdb.rows("SELECT recover_prepared_transactions()")
        except psycopg2.OperationalError:
            return False
        return cdb.count(cschema, "chunk") >= ROWS

    try:
        wait_until("the interrupted commits recovered", recovered,
                   timeout=30)
    except BaseException:
        have = {d for (d,) in cdb.rows(
            f'SELECT DISTINCT document_id FROM "{cschema}".chunk')}
        sent = {it.document_id for c in chunks for it in c.items}
        print("missing documents:", sorted(sent - have))
        print(ef.log)
        raise
    upload.finish(cdb, cschema)
    assert cdb.count(cschema, "embedding") == ROWS
    assert cdb.count(cschema, "dead_letter") == 0


def test_a_pull_job_writes_into_the_cluster(cdb, cschema, tmp_path):
    """`embedflow pull` from the example AI server into a distributed
    schema: the rows on both workers, the run and its checkpoint on the
    coordinator, a re-pull keeps one version of every chunk, and a
    document the server's version changes is announced to the
    CacheService through the outbox."""
    record = str(tmp_path / "calls.jsonl")
    port = free_port()
    api = CacheServer(port, record)
    server = AiServer(2000, DIM, extra=["--delay-ms", "0"])

    def pull(*extra):
        ef = Embedflow(["pull", "--database", CITUS, "--schema", cschema,
                        "--target", server.target, "--source", "src",
                        "--dim", str(DIM), "--distribution", "citus",
                        "--batch-rows", "200",
                        "--api-server", f"127.0.0.1:{port}", *extra])
        assert finish(ef) == 0, ef.log
        return ef

    try:
        pull()
        for table in ("chunk", "embedding"):
            per = rows_per_worker(cdb, cschema, table)
            assert sum(per.values()) == 2000 and min(per.values()) > 0, \
                (table, per)
        (run,) = runs(cdb, cschema)
        assert (run["status"], run["rows_written"]) == ("completed", 2000)
        assert run["last_resume_token"] == "row:2000"
        assert cdb.scalar(
            "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid IN"
            " (%s::regclass, %s::regclass)",
            (f'"{cschema}".job_run', f'"{cschema}".pull_piece')) == 0
        docs = {d for (d,) in cdb.rows(
            f'SELECT DISTINCT document_id FROM "{cschema}".chunk')}
        wait_until("every pulled document invalidated", lambda:
                   {("src", d) for d in docs} <= delivered(record))
        before = len(calls(record))

        # The stored version of one document is not the server's (as if
        # the server's model had changed since): a re-pull from the start
        # rewrites that document only, in place, and announces it.
        doc = "doc-0000003"
        ids = cdb.rows(f'SELECT chunk_index, id FROM "{cschema}".chunk'
                       f' WHERE document_id = %s ORDER BY 1', (doc,))
        cdb.rows(f'UPDATE "{cschema}".chunk SET content = %s,'
                 f" content_hash = '\\x00' WHERE document_id = %s",
                 ("old", doc))
        pull("--from-start")
        assert cdb.count(cschema, "chunk") == 2000
        assert cdb.count(cschema, "embedding") == 2000
        assert cdb.rows(f'SELECT chunk_index, id FROM "{cschema}".chunk'
                        f' WHERE document_id = %s ORDER BY 1', (doc,)) == ids
        assert cdb.scalar(f'SELECT count(*) FROM "{cschema}".chunk'
                          f" WHERE content = 'old'") == 0
        wait_until("the changed document invalidated", lambda:
                   ("src", doc) in {(s, d) for s, ids in
                                    calls(record)[before:] for d in ids})
        assert calls(record)[before:] == [("src", [doc])], \
            calls(record)[before:]
        assert [r["status"] for r in runs(cdb, cschema)] == ["completed"] * 2
    finally:
        server.stop()
        api.stop()


def test_the_ann_index_is_on_every_shard(start, cdb, cschema):
    ef = start(extra=["--vector_type", "vector", "--index.method", "hnsw",
                      "--index.segments", "false"])
    items = [row(f"ann{i}", 0, DIM) for i in range(200)]
    r = send(ef.target, [chunk(items, 1)])
    assert (r.written, r.dead_lettered) == (200, 0)
    # Citus makes the index on each shard of embedding, on its worker
    per_shard = cdb.rows(
        "SELECT result FROM run_command_on_shards (%s, $$SELECT count(*)"
        " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_am a ON a.oid = c.relam"
        " WHERE i.indrelid = '%%s'::regclass AND a.amname = 'hnsw'$$)",
        (f'"{cschema}".embedding',))
    assert len(per_shard) > 1
    assert all(n == "1" for (n,) in per_shard), per_shard
    literal = "[" + ",".join(repr(x) for x in items[17].vector) + "]"
    # each shard answers from its index, the coordinator merges
    nearest = cdb.scalar(
        f'SELECT document_id FROM "{cschema}".embedding'
        f' ORDER BY vector <=> %s::vector LIMIT 1', (literal,))
    assert nearest == "ann17"


def test_check_lists_the_nodes(start, cschema):
    start().stop()
    out = subprocess.run(
        [EMBEDFLOW_BIN, "check", "--database", CITUS, "--schema", cschema,
         "--dim", str(DIM), "--distribution", "citus",
         "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, env=clean_env(), timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    workers = re.findall(r"INFO\s+citus node: worker \S+ active, (\d+) "
                         r"shards of " + re.escape(cschema), out.stdout)
    assert len(workers) == 2 and all(int(n) > 0 for n in workers), out.stdout
    assert re.search(r"OK\s+citus: coordinator with 2 workers", out.stdout)

    # the same schema with distribution none is a usage error
    out = subprocess.run(
        [EMBEDFLOW_BIN, "check", "--database", CITUS, "--schema", cschema,
         "--dim", str(DIM), "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, env=clean_env(), timeout=60)
    assert out.returncode != 0
    assert "has distribution citus but distribution is none" in out.stdout


def test_bench_counts_every_node(cdb, tmp_path):
    """`embedflow bench` on the cluster counts the CPU of the
    coordinator's and each worker's whole server (all on this host: the
    workers do most of the work), and its legend says so."""
    out = tmp_path / "bench.json"
    try:
        p = subprocess.run(
            [EMBEDFLOW_BIN, "bench", "--database", CITUS, "--distribution",
             "citus", "--rows", "2000", "--dim", "32", "--runs", "1",
             "--writers", "2", "--row-rows", "200", "--no-pull",
             "--json", str(out)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=600, env=clean_env())
        assert p.returncode == 0, p.stdout + p.stderr
        assert "pg cpu s: every process of the Citus coordinator's and its " \
            "2 workers' servers" in p.stdout, p.stdout
        for r in json.loads(out.read_text())["results"]:
            assert r["median"]["cpu_postgres_s"] > 0, r
    finally:
        for s in ("copy", "staged", "row", "pipeline", "pull"):
            cdb.rows(f"DROP SCHEMA IF EXISTS embedflow_bench_{s} CASCADE")


def conversion_sql(schema):
    """The SQL block of docs/scaling.md that distributes a schema made
    for one PostgreSQL, for schema."""
    text = open(SCALING_MD).read()
    m = re.search(r"<!-- convert -->\s*```sql\n(.*?)```", text, re.S)
    assert m, "docs/scaling.md has no conversion SQL"
    return m.group(1).replace("embedflow.", f'"{schema}".') \
        .replace("'embedflow'", f"'\"{schema}\"'")


def test_a_schema_of_one_postgresql_is_refused_until_converted(
        start, cdb, cschema):
    ef = start(distribution="none")
    send(ef.target, stream(300, DIM, 100, doc_prefix="p"))
    assert ef.stop() == 0
    assert cdb.scalar("SELECT count(*) FROM pg_dist_partition WHERE"
                      " logicalrelid = %s::regclass",
                      (f'"{cschema}".chunk',)) == 0

    refused = start(ready=False)
    assert refused.proc.wait(60) != 0
    assert re.search(r"was made with distribution none .* never converts "
                     r"a schema at start.*docs/scaling.md", refused.log), \
        refused.log
    assert cdb.count(cschema, "chunk") == 300

    for statement in conversion_sql(cschema).split(";\n"):
        if statement.strip():
            cdb.rows(statement)
    ef = start()
    per = rows_per_worker(cdb, cschema, "embedding")
    assert sum(per.values()) == 300 and min(per.values()) > 0, per
    more = stream(300, DIM, 100, doc_prefix="q")
    assert send(ef.target, more).written == 300
    # an old document's new version through the converted keys
    r = send(ef.target, [chunk([row("p-0", 0, DIM, content="new")], 1)])
    assert r.written == 1
    assert cdb.count(cschema, "chunk") == 600
    assert cdb.scalar(f'SELECT count(*) FROM "{cschema}".chunk c JOIN'
                      f' "{cschema}".embedding e USING (document_id, id)'
                      f" WHERE c.content = 'new'") == 1
