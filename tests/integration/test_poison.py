"""Rows the database refuses although the splitter let them through: the
writer bisects the batch, so only those rows reach the DLQ (with their
SQLSTATE) and the rest commit, in a logarithmic number of transactions."""
import math
import re
import signal

from helpers import chunk, row, send

DIM = 8
ROWS = 1000
POISON = (17, 500, 999)          # positions in the one batch


def test_poison_rows_are_isolated_by_bisection(embedflow, db, schema):
    # One writer and batches of exactly ROWS, so the whole upload is one
    # batch of one writer, whose transaction count we read from its log.
    ef = embedflow(writers=1, dim=DIM,
                   extra=["--batch-rows", str(ROWS),
                          "--actors.splitter.linger", "10s"])
    # The tables exist once the writer has migrated and says so.
    ef.wait_for_line(r"writing to database")
    db.rows(f'ALTER TABLE "{schema}".chunk ADD CONSTRAINT no_poison '
            f"CHECK (content NOT LIKE 'poison%')")
    items = [row(f"p-{i}", 0, DIM,
                 content=("poison " if i in POISON else "fine ") + str(i))
             for i in range(ROWS)]

    result = send(ef.target, [chunk(items, 1)])

    assert (result.received, result.written, result.dead_lettered) == \
        (ROWS, ROWS - len(POISON), len(POISON))
    assert db.count(schema, "chunk") == ROWS - len(POISON)
    assert db.count(schema, "embedding") == ROWS - len(POISON)
    stored_docs = {d for (d,) in db.rows(
        f'SELECT document_id FROM "{schema}".chunk')}
    assert not stored_docs & {f"p-{i}" for i in POISON}
    dead = db.rows(f'SELECT document_id, stage, sqlstate, reason, '
                   f'original IS NOT NULL FROM "{schema}".dead_letter '
                   f'ORDER BY document_id')
    assert sorted(d[0] for d in dead) == sorted(f"p-{i}" for i in POISON)
    for doc, stage, sqlstate, reason, has_original in dead:
        assert stage == "write"
        assert sqlstate == "23514", (doc, sqlstate, reason)
        assert "no_poison" in reason, reason
        assert has_original

    assert ef.stop(signal.SIGTERM) == 0
    m = re.search(r"db-writer.*?(\d+) rows written, (\d+) dead-lettered, "
                  r"(\d+) transactions", ef.log)
    assert m, ef.log
    transactions = int(m.group(3))
    # Bisection: each poison row costs at most two transactions per level
    # of a tree of depth ceil(log2 ROWS), plus the first try; one row at a
    # time would take ROWS.
    bound = 1 + 2 * len(POISON) * math.ceil(math.log2(ROWS))
    print(f"poison: {len(POISON)} of {ROWS} rows refused, "
          f"{transactions} transactions (bound {bound})")
    assert len(POISON) < transactions <= bound, transactions
