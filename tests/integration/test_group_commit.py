"""Group commit (db-writer `adaptive`): batches that queue up behind a
slow transaction are merged into fewer transactions, and every row is
still written exactly once, acked once and, when refused, dead-lettered
alone. With `adaptive` off every batch is its own transaction."""
import re
import subprocess
import threading

import psycopg2
import pytest

from conftest import DATABASE, EMBEDFLOW_BIN, clean_env
from helpers import chunk, row, scrape_samples, send, wait_until

DIM = 8
BATCH = 25
_METRICS = r"metrics on (http://\S+:\d+)/metrics"


def value(samples, name, actor):
    return samples.get((name, f'actor="{actor}"'), 0)


def start(embedflow, adaptive):
    ef = embedflow(writers=1, dim=DIM, extra=[
        "--batch-rows", str(BATCH), "--metrics", "127.0.0.1:0",
        "--actors.db-writer.adaptive", "true" if adaptive else "false",
        # every commit here is "fast enough": the cap grows by a batch
        # after each one, so the backlog is merged deterministically
        "--actors.db-writer.adaptive_target", "60s"])
    base = ef.wait_for_line(_METRICS).group(1)
    ef.wait_for_line(r"writing to database")   # tables exist
    return ef, base


def upload_behind_a_lock(ef, base, schema, items, queued):
    """Uploads items (chunks of BATCH rows) while the chunk table is
    locked; once the writer is stuck in its first transaction with at
    least `queued` batches waiting behind it, releases the lock. Returns
    the UploadResult."""
    locker = psycopg2.connect(DATABASE)
    cur = locker.cursor()
    cur.execute(f'LOCK TABLE "{schema}".chunk IN ACCESS EXCLUSIVE MODE')
    result, error = {}, {}

    def uploader():
        try:
            chunks = [chunk(items[i:i + BATCH], i // BATCH + 1)
                      for i in range(0, len(items), BATCH)]
            result["r"] = send(ef.target, chunks)
        except Exception as e:       # reported below
            error["e"] = e

    t = threading.Thread(target=uploader)
    t.start()
    try:
        def backlog():
            s = scrape_samples(base)
            made = value(s, "embedflow_actor_batches_total", "splitter")
            taken = value(s, "embedflow_actor_messages_in_total", "db-writer")
            return taken == 1 and made - taken >= queued
        wait_until(f"{queued} batches queued behind a locked writer", backlog)
    finally:
        locker.commit()
        locker.close()
    t.join(120)
    assert not t.is_alive()
    assert "e" not in error, error.get("e")
    return result["r"]


@pytest.mark.parametrize("adaptive", [True, False])
def test_backlog_is_merged_exactly_once(embedflow, db, schema, adaptive):
    ef, base = start(embedflow, adaptive)
    n = 40 * BATCH
    items = [row(f"g-{i // 3}", i % 3, DIM) for i in range(n)]

    r = upload_behind_a_lock(ef, base, schema, items, queued=4)

    assert (r.received, r.written, r.dead_lettered) == (n, n, 0)
    assert db.scalar(f'SELECT count(*) FROM "{schema}".chunk') == n
    assert db.scalar(f'SELECT count(DISTINCT (document_id, chunk_index)) '
                     f'FROM "{schema}".chunk') == n
    assert db.count(schema, "embedding") == n
    s = scrape_samples(base)
    batches = value(s, "embedflow_actor_batches_total", "splitter")
    taken = value(s, "embedflow_actor_messages_in_total", "db-writer")
    commits = value(s, "embedflow_actor_batches_total", "db-writer")
    merged = value(s, "embedflow_writer_merged_transactions_total",
                   "db-writer")
    in_merged = value(s, "embedflow_writer_merged_batches_total", "db-writer")
    assert batches == n // BATCH and taken == batches
    assert value(s, "embedflow_actor_rows_out_total", "db-writer") == n
    assert value(s, "embedflow_actor_errors_total", "db-writer") == 0
    print(f"adaptive {adaptive}: {batches:.0f} batches in {commits:.0f} "
          f"transactions ({merged:.0f} merged)")
    if adaptive:
        assert merged >= 1 and commits < batches
        # each batch went into exactly one transaction
        assert in_merged + (commits - merged) == batches
        assert value(s, "embedflow_writer_cap_rows", "db-writer") > BATCH
    else:
        assert commits == batches and merged == 0 and in_merged == 0
        assert ("embedflow_writer_cap_rows", 'actor="db-writer"') not in s


def test_poison_row_in_a_merged_transaction_goes_alone(embedflow, db,
                                                       schema):
    ef, base = start(embedflow, True)
    db.rows(f'ALTER TABLE "{schema}".chunk ADD CONSTRAINT no_poison '
            f"CHECK (content NOT LIKE 'poison%')")
    n = 8 * BATCH
    poison = 2 * BATCH + 7          # in the third batch
    items = [row(f"q-{i}", 0, DIM,
                 content=("poison " if i == poison else "fine ") + str(i))
             for i in range(n)]

    # The first batch waits on the lock alone; the second and third are
    # queued, so the next transaction merges them (cap: two batches).
    r = upload_behind_a_lock(ef, base, schema, items, queued=3)

    assert (r.received, r.written, r.dead_lettered) == (n, n - 1, 1)
    assert db.count(schema, "chunk") == n - 1
    assert db.count(schema, "embedding") == n - 1
    dead = db.rows(f'SELECT document_id, sqlstate FROM "{schema}".dead_letter')
    assert dead == [(f"q-{poison}", "23514")]
    s = scrape_samples(base)
    assert value(s, "embedflow_writer_merged_transactions_total",
                 "db-writer") >= 1
    assert value(s, "embedflow_actor_dead_lettered_total", "db-writer") == 1
    # the refused row was found inside a merged transaction by bisecting it
    assert re.search(r"batches \d+\+\d+ merged: \d+ rows written, "
                     r"1 dead-lettered", ef.log), ef.log


@pytest.mark.parametrize("key, bad", [("adaptive_max_rows", "0"),
                                      ("adaptive_target", "0ms"),
                                      ("adaptive", "sometimes")])
def test_bad_adaptive_settings_are_refused(key, bad):
    p = subprocess.run([EMBEDFLOW_BIN, "run", "--database", DATABASE,
                        f"--actors.db-writer.{key}", bad],
                       capture_output=True, text=True, env=clean_env(),
                       timeout=30)
    assert p.returncode == 2, p.stderr
    assert f"actors.db-writer.{key}" in p.stderr
