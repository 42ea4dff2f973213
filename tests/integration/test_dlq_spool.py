"""The DLQ while its database is unreachable: dead letters go to a local
spool file (and are acknowledged, so the upload is answered), are
imported once the database is back, also after a kill -9, and the spool
is removed; nothing is lost or stored twice."""
import os
import signal

import psycopg2

from conftest import Embedflow
from helpers import chunk, row, send, wait_until
from private_pg import private_pg  # noqa: F401,F811 (fixture)

DIM = 8


def bad_rows(prefix, n):
    """Rows the splitter refuses (wrong dimension): dead letters that need
    no database to be produced."""
    return [row(f"{prefix}-{i}", 0, DIM + 1) for i in range(n)]


def dead_docs(conninfo):
    conn = psycopg2.connect(conninfo)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT document_id FROM spool.dead_letter")
            return sorted(d for (d,) in cur.fetchall())
    finally:
        conn.close()


def start(pg, spool):
    return Embedflow(["run", "--database", pg.conninfo, "--schema", "spool",
                      "--listen", "127.0.0.1:0", "--writers", "1",
                      "--dim", str(DIM), "--actors.dlq.spool", spool,
                      "--actors.dlq.retry_cap", "300ms",
                      # imported in groups: several transactions
                      "--actors.dlq.flush_items", "16"]).wait_ready()


def ready(ef):
    """Every actor has started (and migrated) once run says so."""
    ef.wait_for_line(r"embedflow: ready")
    return ef


def test_dlq_spools_while_database_is_down(private_pg, tmp_path):
    spool = str(tmp_path / "dlq.spool")
    ef = ready(start(private_pg, spool))
    try:
        # 1. Down: the letters are spooled and acknowledged at once.
        private_pg.stop_fast()
        r = send(ef.target, [chunk(bad_rows("a", 40), 1)], timeout=60)
        assert (r.received, r.written, r.dead_lettered) == (40, 0, 40)
        assert os.path.getsize(spool) > 40 * 8, "nothing spooled"
        ef.wait_for_line(r"dead letters go to the spool")
        # 2. Back: imported without any new traffic, spool removed.
        private_pg.start_again()
        wait_until("the spool import", lambda:
                   dead_docs(private_pg.conninfo) ==
                   sorted(f"a-{i}" for i in range(40)))
        ef.wait_for_line(r"imported 40 dead letters from the spool")
        assert not os.path.exists(spool)

        # 3. Down again, spooled, then kill -9: the file survives and the
        #    next start imports it.
        private_pg.stop_fast()
        r = send(ef.target, [chunk(bad_rows("b", 25), 1)], timeout=60)
        assert r.dead_lettered == 25
        size = os.path.getsize(spool)
        ef.proc.kill()
        ef.proc.wait(10)
        assert os.path.getsize(spool) == size
    finally:
        if ef.alive():
            ef.stop(signal.SIGKILL)
    private_pg.start_again()
    ef = start(private_pg, spool)
    try:
        ef.wait_for_line(r"imported 25 dead letters from the spool")
        want = sorted([f"a-{i}" for i in range(40)] +
                      [f"b-{i}" for i in range(25)])
        assert dead_docs(private_pg.conninfo) == want
        assert not os.path.exists(spool)
        conn = psycopg2.connect(private_pg.conninfo)
        with conn.cursor() as cur:
            cur.execute("SELECT DISTINCT stage, reason_code, original IS NOT "
                        "NULL FROM spool.dead_letter")
            kinds = cur.fetchall()
        assert len(kinds) == 1 and kinds[0][0] == "split" and kinds[0][2], \
            kinds
        conn.close()
    finally:
        assert ef.stop() == 0, ef.log
