"""Push mode under kill -9: several rounds each kill embedflow at a random
point of a large upload, restart it and send the whole upload again; the
tables must then hold every row exactly once, with the last version.

The kill points come from a seed that is printed (shown with a failure)
and can be set with EF_KILL_SEED to replay a run."""
import os
import random
import signal
import threading

import grpc

from helpers import CALL_TIMEOUT, chunk, parse_vector, row, same_vector, upload

DIM = 8
ROWS = 30000
CHUNK_ROWS = 250                 # 120 chunks per upload
# The version each killed round sends: a re-send of the same version
# after a kill, and a new version after a kill, both occur.
KILLED_VERSIONS = [1, 1, 2, 3, 3, 4]
FINAL_VERSION = 4
# small queues and batches: a kill finds rows at every stage, with
# commits before and after it
SMALL = ["--links.chunks.hwm", "2", "--links.batches.hwm", "1",
         "--batch-rows", "500"]


def _key(n):
    return f"doc-{n // 10}", n % 10


def _content(version, doc, index):
    return f"v{version} {doc}/{index}"


def _chunks(version):
    """The whole upload of one version: same identities, content and
    vectors that differ per version."""
    rows = [row(doc, index, DIM, content=_content(version, doc, index),
                seed=version)
            for doc, index in map(_key, range(ROWS))]
    return [chunk(rows[i:i + CHUNK_ROWS], i // CHUNK_ROWS + 1)
            for i in range(0, ROWS, CHUNK_ROWS)]


def _stored(db, schema):
    """{(doc, index): (content, vector text)} of the rows in chunk joined
    with embedding, and the number of ids in only one of the two. A kill
    before the writers created the tables leaves nothing stored."""
    if not db.rows("SELECT 1 FROM pg_tables WHERE schemaname = %s "
                   "AND tablename = 'embedding'", (schema,)):
        return {}, 0, 0
    rows = db.rows(
        f'SELECT c.document_id, c.chunk_index, c.content, e.vector::text '
        f'FROM "{schema}".chunk c JOIN "{schema}".embedding e USING (id)')
    orphans = db.scalar(
        f'SELECT count(*) FROM "{schema}".chunk c '
        f'FULL JOIN "{schema}".embedding e USING (id) '
        f'WHERE c.id IS NULL OR e.id IS NULL')
    return {(d, i): (c, v) for d, i, c, v in rows}, len(rows), orphans


def _upload_until_killed(ef, chunks, kill_at):
    """Streams chunks and SIGKILLs ef when the client is about to send
    chunk kill_at (len(chunks): once all are sent, before the result).
    Returns the client's outcome: an UploadResult or the grpc.RpcError."""
    reached = threading.Event()
    outcome = {}

    def requests():
        for i, c in enumerate(chunks):
            if i == kill_at:
                reached.set()
            yield c
        reached.set()

    def client():
        try:
            outcome["result"] = upload(ef.target, requests(),
                                       timeout=CALL_TIMEOUT)
        except grpc.RpcError as e:
            outcome["error"] = e
        reached.set()

    t = threading.Thread(target=client)
    t.start()
    assert reached.wait(CALL_TIMEOUT), "the upload did not get going"
    ef.expect_exit = -signal.SIGKILL
    ef.send_signal(signal.SIGKILL)
    assert ef.proc.wait(30) == -signal.SIGKILL, ef.log
    t.join(CALL_TIMEOUT)
    assert not t.is_alive(), "the client hangs after the kill"
    return outcome.get("result") or outcome.get("error")


def test_kill9_during_upload_then_resend(embedflow, db, schema):
    seed = int(os.environ.get("EF_KILL_SEED") or random.randrange(1 << 32))
    rng = random.Random(seed)
    uploads = {v: _chunks(v) for v in sorted(set(KILLED_VERSIONS))}
    n = len(uploads[FINAL_VERSION])
    kill_at = [rng.randint(1, n) for _ in KILLED_VERSIONS]
    ctx = f"EF_KILL_SEED={seed}, kill before chunk {kill_at} of {n}"
    print(f"push kill campaign: {ctx}")

    expected = {v: {} for v in uploads}
    for v, chunks in uploads.items():
        for c in chunks:
            for r in c.items:
                expected[v][(r.document_id, r.chunk_index)] = \
                    (r.content, list(r.vector))

    sent = set()
    for rnd, (version, at) in enumerate(zip(KILLED_VERSIONS, kill_at)):
        ef = embedflow(dim=DIM, extra=SMALL)
        outcome = _upload_until_killed(ef, uploads[version], at)
        sent.add(version)
        where = f"round {rnd} (v{version}, kill at {at}); {ctx}"
        if isinstance(outcome, grpc.RpcError):
            assert outcome.code() in (grpc.StatusCode.UNAVAILABLE,
                                      grpc.StatusCode.INTERNAL,
                                      grpc.StatusCode.CANCELLED), \
                f"{where}: {outcome.code()}: {outcome.details()}"
        # What survived a kill is whole: each row in both tables, as one
        # of the versions sent so far, never a mix of two.
        got, count, orphans = _stored(db, schema)
        assert orphans == 0, f"{where}: {orphans} rows in one table only"
        assert count == len(got), f"{where}: duplicate identities"
        at_kill = sum(1 for c, _ in got.values()
                      if c.startswith(f"v{version} "))
        print(f"round {rnd}: v{version} killed before chunk {at}: "
              f"{at_kill} rows of v{version} stored, outcome "
              f"{getattr(outcome, 'code', lambda: 'result')()}")
        if not isinstance(outcome, grpc.RpcError):
            # answered before the kill: every row was committed
            assert outcome.received == ROWS and at_kill == ROWS, \
                f"{where}: {outcome} but {at_kill} rows stored"
        for key, (content, vector) in got.items():
            v = int(content.split(" ", 1)[0][1:])
            assert v in sent, f"{where}: {key} has unsent version {v}"
            want_content, want_vector = expected[v][key]
            assert content == want_content, f"{where}: {key}: {content}"
            assert same_vector(parse_vector(vector), want_vector), \
                f"{where}: {key}: vector of another version"

    # The final re-send, uninterrupted: exactly the last version remains.
    ef = embedflow(dim=DIM, extra=SMALL)
    result = upload(ef.target, iter(uploads[FINAL_VERSION]),
                    timeout=CALL_TIMEOUT)
    assert (result.received, result.written, result.dead_lettered) == \
        (ROWS, ROWS, 0), f"{result}; {ctx}\nlog:\n{ef.log}"
    got, count, orphans = _stored(db, schema)
    assert orphans == 0, f"{orphans} rows in one table only; {ctx}"
    assert count == ROWS, f"{count} rows, want {ROWS}; {ctx}"
    assert db.count(schema, "chunk") == ROWS, ctx
    assert db.count(schema, "embedding") == ROWS, ctx
    assert set(got) == set(expected[FINAL_VERSION]), ctx
    stale = [key for key, (content, vector) in got.items()
             if content != expected[FINAL_VERSION][key][0]
             or not same_vector(parse_vector(vector),
                                expected[FINAL_VERSION][key][1])]
    assert not stale, f"{len(stale)} rows not of the last version, " \
                      f"e.g. {stale[:3]}; {ctx}"
    assert db.count(schema, "dead_letter") == 0, ctx
