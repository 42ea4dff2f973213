"""Push mode: UploadEmbeddings end to end into PostgreSQL."""
import threading

from helpers import (chunk, is_uuid7, row, same_vector, send, stored,
                     stream)

DIM = 16


def test_upload_10000_rows_in_40_chunks(embedflow, db, schema):
    ef = embedflow(dim=DIM)
    chunks = stream(10000, DIM, 250)
    assert len(chunks) == 40

    result = send(ef.target, chunks)

    assert (result.received, result.written, result.dead_lettered) == \
        (10000, 10000, 0)
    assert result.job_id
    assert db.count(schema, "chunk") == 10000
    assert db.count(schema, "embedding") == 10000
    ids = [r[0] for r in db.rows(f'SELECT id::text FROM "{schema}".chunk')]
    not_v7 = [i for i in ids if not is_uuid7(i)]
    assert not not_v7, f"{len(not_v7)} ids are not UUIDv7, e.g. {not_v7[:3]}"
    # Both tables describe the same rows.
    assert db.scalar(f'SELECT count(*) FROM "{schema}".chunk c '
                     f'JOIN "{schema}".embedding e USING (id)') == 10000
    doc, index = "doc-123", 4
    got = stored(db, schema, doc, index)
    expected = row(doc, index, DIM, seed=0)
    assert got is not None and same_vector(got[2], list(expected.vector))
    assert db.scalar(f'SELECT dim FROM "{schema}".embedding LIMIT 1') == DIM


def _snapshot(db, schema):
    return {(d, i): (id_, c_upd, e_upd) for d, i, id_, c_upd, e_upd in db.rows(
        f'SELECT c.document_id, c.chunk_index, c.id::text, c.updated_at, '
        f'e.updated_at FROM "{schema}".chunk c '
        f'JOIN "{schema}".embedding e USING (id)')}


def test_resend_is_idempotent_and_changed_vectors_update(embedflow, db,
                                                         schema):
    ef = embedflow(dim=DIM)
    first = send(ef.target, stream(10000, DIM, 250))
    assert first.written == 10000
    before = _snapshot(db, schema)
    assert len(before) == 10000

    # The same stream again: same rows, same ids, nothing rewritten.
    again = send(ef.target, stream(10000, DIM, 250))
    assert (again.received, again.dead_lettered) == (10000, 0)
    same = _snapshot(db, schema)
    assert db.count(schema, "chunk") == 10000
    assert db.count(schema, "embedding") == 10000
    assert {k: v[0] for k, v in same.items()} == \
        {k: v[0] for k, v in before.items()}
    assert same == before, "an unchanged re-send must not rewrite rows"

    # New vectors for the same identities: updated in place.
    changed = send(ef.target, stream(10000, DIM, 250, seed=1))
    assert (changed.received, changed.written, changed.dead_lettered) == \
        (10000, 10000, 0)
    after = _snapshot(db, schema)
    assert db.count(schema, "chunk") == 10000
    assert {k: v[0] for k, v in after.items()} == \
        {k: v[0] for k, v in before.items()}, "updates must keep the ids"
    stale = [k for k in before if not after[k][2] > before[k][2]]
    assert not stale, f"embedding.updated_at did not move for {stale[:3]}"
    for doc, index in [("doc-0", 0), ("doc-512", 7), ("doc-999", 9)]:
        got = stored(db, schema, doc, index)
        assert same_vector(got[2], list(row(doc, index, DIM, seed=1).vector))


def test_later_version_in_one_stream_wins(embedflow, db, schema):
    # Small batches so that versions in different chunks are written by
    # different transactions, in order.
    ef = embedflow(dim=DIM, extra=["--batch-rows", "32"])
    filler = [row(f"fill-{n // 8}", n % 8, DIM) for n in range(400)]
    chunks = [
        # Two versions in the same chunk.
        chunk([row("same", 0, DIM, "old", seed=1),
               row("other", 0, DIM),
               row("same", 0, DIM, "new", seed=2)], 1),
        chunk([row("split", 3, DIM, "old", seed=1)], 2),
        chunk(filler[:200], 3),
        chunk(filler[200:], 4),
        # The second version of "split" comes three chunks later.
        chunk([row("split", 3, DIM, "new", seed=2)], 5),
    ]
    result = send(ef.target, chunks)
    assert result.received == 405 and result.dead_lettered == 0
    assert db.count(schema, "chunk") == 403
    for doc, index in [("same", 0), ("split", 3)]:
        got = stored(db, schema, doc, index)
        assert got[1] == "new", f"{doc}: the earlier version was kept"
        assert same_vector(got[2],
                           list(row(doc, index, DIM, seed=2).vector))


def test_four_concurrent_uploads(embedflow, db, schema):
    ef = embedflow(dim=DIM, writers=4)
    results, errors = {}, {}

    def upload_part(i):
        try:
            results[i] = send(ef.target,
                              stream(2500, DIM, 100, doc_prefix=f"p{i}"),
                              timeout=120)
        except Exception as e:  # reported below, with the log
            errors[i] = e

    threads = [threading.Thread(target=upload_part, args=(i,))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not any(t.is_alive() for t in threads), "uploads hang"
    assert not errors, f"{errors}\nlog:\n{ef.log}"
    for i in range(4):
        assert (results[i].received, results[i].written) == (2500, 2500)
    assert len({r.job_id for r in results.values()}) == 4
    assert db.count(schema, "chunk") == 10000
    assert db.count(schema, "embedding") == 10000


def test_client_ids_are_kept(embedflow, db, schema):
    ef = embedflow(dim=DIM)
    given = "0190a5b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b"
    result = send(ef.target, [chunk([row("mine", 0, DIM, id=given)], 1)])
    assert result.written == 1
    assert stored(db, schema, "mine", 0)[0] == given
