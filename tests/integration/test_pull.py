"""Pull mode: `embedflow pull` against the example AI server (real grpcio),
real PostgreSQL; checkpoints committed with the data, resumption after
kill -9 and after a server restart, bad rows and undecodable messages,
one process per job."""
import json
import random
import signal
import subprocess

from conftest import DATABASE, EMBEDFLOW_BIN, clean_env
from pullhelp import AiServer, finish, pull, runs

DIM = 16


def stored_rows(db, schema):
    """(rows, distinct row numbers, lowest, highest) in the chunk table."""
    return db.rows(
        f"SELECT count(*), count(DISTINCT n), min(n), max(n) FROM "
        f"(SELECT split_part(content, ' ', 3)::int AS n "
        f'FROM "{schema}".chunk) s')[0]


def test_pull_all_rows(db, schema):
    rows = 50000
    server = AiServer(rows, DIM, extra=["--delay-ms", "0"])
    try:
        ef = pull(schema, server.target)
        assert finish(ef) == 0, ef.log
        assert "status           completed" in ef.log
        assert stored_rows(db, schema) == (rows, rows, 0, rows - 1)
        assert db.count(schema, "embedding") == rows
        assert db.count(schema, "dead_letter") == 0
        (run,) = runs(db, schema)
        assert run["status"] == "completed" and run["trigger"] == "manual"
        assert (run["rows_received"], run["rows_written"],
                run["rows_dead_lettered"]) == (rows, rows, 0)
        assert run["last_resume_token"] == f"row:{rows}"
        assert db.scalar(f'SELECT count(*) FROM "{schema}".chunk '
                         f"WHERE source = 'src'") == rows

        # Again: the job resumes after its last chunk, nothing is served.
        ef = pull(schema, server.target)
        assert finish(ef) == 0, ef.log
        call = server.calls()[-1]
        assert call["resume_token"] == f"row:{rows}"
        end = server.wait_for(lambda e: e["event"] == "end" and
                              e["call"] == call["call"])
        assert end["served_rows"] == 0

        # --from-start ignores the checkpoint.
        ef = pull(schema, server.target, extra=["--from-start"])
        assert finish(ef) == 0, ef.log
        assert server.calls()[-1]["resume_token"] == ""

        # `embedflow jobs` shows the three runs, newest first.
        out = subprocess.run(
            [EMBEDFLOW_BIN, "jobs", "--json", "--database", DATABASE,
             "--schema", schema], capture_output=True, env=clean_env(),
            timeout=60)
        assert out.returncode == 0, out.stderr
        listed = json.loads(out.stdout)
        assert [r["status"] for r in listed] == ["completed"] * 3
        assert listed[-1]["rows_written"] == rows
        table = subprocess.run(
            [EMBEDFLOW_BIN, "jobs", "--database", DATABASE, "--schema",
             schema], capture_output=True, env=clean_env(), timeout=60)
        assert table.returncode == 0
        assert table.stdout.decode().count("completed") == 3
    finally:
        server.stop()


def test_kill9_resumes_from_checkpoint(db, schema):
    """kill -9 at three random moments; each restart resumes from the
    committed position, and the end result is every row exactly once."""
    rows = 100000
    rng = random.Random()
    server = AiServer(rows, DIM, extra=["--announce-every", "4"])
    try:
        kill_at = [rng.randint(25000, 35000), rng.randint(50000, 60000),
                   rng.randint(75000, 85000)]
        # small queues: what is in flight at a kill is a few thousand rows
        small = ["--links.chunks.hwm", "2", "--links.batches.hwm", "1"]
        for k, at in enumerate(kill_at):
            ef = pull(schema, server.target, extra=small)
            call = server.wait_for(lambda e: e["event"] == "call" and
                                   e["call"] == k + 1)
            start = call["start_row"]
            if k > 0:
                # resumed: a non-empty token, past where the last run began
                assert call["resume_token"].startswith("row:")
                assert start > prev_start
            server.wait_for(lambda e: e["event"] == "progress" and
                            e["call"] == k + 1 and
                            start + e["served_rows"] >= at)
            ef.proc.send_signal(signal.SIGKILL)
            ef.proc.wait()
            end = server.wait_for(lambda e: e["event"] == "end" and
                                  e["call"] == k + 1)
            assert end["served_rows"] < rows
            prev_start = start
        ef = pull(schema, server.target, extra=small)
        assert finish(ef) == 0, ef.log
        last = server.calls()[-1]
        assert last["call"] == 4
        assert last["resume_token"] != "" and last["start_row"] > prev_start
        end = server.wait_for(lambda e: e["event"] == "end" and
                              e["call"] == 4)
        assert end["status"] == "ok" and end["served_rows"] < rows
        assert stored_rows(db, schema) == (rows, rows, 0, rows - 1)
        assert db.count(schema, "embedding") == rows
        statuses = [r["status"] for r in runs(db, schema)]
        assert statuses == ["abandoned"] * 3 + ["completed"]
        assert all("stopped" in r["error"] for r in runs(db, schema)[:3])
        # the pieces of finished runs are gone, their positions kept
        assert db.count(schema, "pull_piece") == 0
        assert all(r["last_resume_token"].startswith("row:")
                   for r in runs(db, schema))
    finally:
        server.stop()


def test_server_restart_mid_stream(db, schema):
    rows = 20000
    first = AiServer(rows, DIM, extra=["--fault-die-after", "20"])
    port = first.port
    second = None
    try:
        ef = pull(schema, first.target,
                  extra=["--jobs.src.retries", "30",
                         "--jobs.src.retry_cap", "500ms"])
        first.wait_for(lambda e: e["event"] == "dying")
        first.proc.wait()
        second = AiServer(rows, DIM, port=port)
        assert finish(ef) == 0, ef.log
        (call,) = second.calls()
        assert call["resume_token"] != "" and call["start_row"] > 0
        end = second.wait_for(lambda e: e["event"] == "end")
        assert end["status"] == "ok" and end["served_rows"] < rows
        assert stored_rows(db, schema) == (rows, rows, 0, rows - 1)
        (run,) = runs(db, schema)
        assert run["status"] == "completed"
        assert run["rows_written"] == run["rows_received"] >= rows
        assert "UNAVAILABLE" in ef.log and "resuming" in ef.log
    finally:
        first.stop()
        if second:
            second.stop()


def test_server_gone_fails_after_retries(db, schema):
    server = AiServer(1000, DIM, extra=["--fault-die-after", "1"])
    try:
        ef = pull(schema, server.target,
                  extra=["--jobs.src.retries", "2",
                         "--jobs.src.retry_cap", "100ms"])
        assert finish(ef) == 1, ef.log
        assert "retries exhausted" in ef.log
        (run,) = runs(db, schema)
        assert run["status"] == "failed"
        assert "UNAVAILABLE" in run["error"]
        # the chunk that arrived is committed, and is the position
        assert run["last_resume_token"] == "row:256"
        assert db.count(schema, "chunk") == 256
    finally:
        server.stop()


def test_bad_rows_and_undecodable_message(db, schema):
    rows, chunk = 4000, 256
    server = AiServer(rows, DIM, extra=["--fault-bad-rows-at", "2",
                                        "--fault-undecodable-at", "6"])
    try:
        ef = pull(schema, server.target)
        assert finish(ef) == 1, ef.log
        assert "is not a valid EmbeddingChunk" in ef.log
        bad = [n for n in range(2 * chunk, 3 * chunk) if n % 5 == 0]
        good = 6 * chunk - len(bad)
        assert db.count(schema, "chunk") == good
        assert db.scalar(f'SELECT count(*) FROM "{schema}".dead_letter '
                         f"WHERE reason_code = 'wrong_dimension'") == len(bad)
        (run,) = runs(db, schema)
        assert run["status"] == "failed"
        assert "not a valid EmbeddingChunk" in run["error"]
        assert run["rows_written"] == good
        assert run["rows_dead_lettered"] == len(bad)
        # the position stays at the last good chunk
        assert run["last_resume_token"] == f"row:{6 * chunk}"
    finally:
        server.stop()

    # A fixed server: the job resumes after the last good chunk.
    fixed = AiServer(rows, DIM)
    try:
        ef = pull(schema, fixed.target)
        assert finish(ef) == 0, ef.log
        (call,) = fixed.calls()
        assert call["resume_token"] == f"row:{6 * chunk}"
        assert db.count(schema, "chunk") == rows - len(bad)
        assert [r["status"] for r in runs(db, schema)] == ["failed",
                                                           "completed"]
    finally:
        fixed.stop()


def test_one_process_per_job(db, schema):
    server = AiServer(6000, DIM, extra=["--delay-ms", "50"])
    try:
        first = pull(schema, server.target)
        server.wait_for(lambda e: e["event"] == "call")
        second = pull(schema, server.target,
                      extra=["--actors.grpc-puller.lock_timeout", "0"])
        assert finish(second) == 1, second.log
        assert "job src is already running in another process" in second.log
        assert len(server.calls()) == 1
        assert finish(first) == 0, first.log
        assert [r["status"] for r in runs(db, schema)] == ["completed"]
    finally:
        server.stop()


def test_sigterm_ends_the_run_and_resume_completes(db, schema):
    rows = 8000
    server = AiServer(rows, DIM, extra=["--delay-ms", "20",
                                        "--announce-every", "2"])
    try:
        ef = pull(schema, server.target)
        server.wait_for(lambda e: e["event"] == "progress")
        ef.proc.send_signal(signal.SIGTERM)
        assert finish(ef) == 1, ef.log
        assert "stopped before the stream ended" in ef.log
        (run,) = runs(db, schema)
        assert run["status"] == "failed"
        # every forwarded row was settled before the run ended
        assert run["rows_received"] == run["rows_written"] > 0
        assert run["last_resume_token"] == f"row:{run['rows_written']}"
        fast = AiServer(rows, DIM)
        try:
            ef = pull(schema, fast.target)
            assert finish(ef) == 0, ef.log
            assert fast.calls()[0]["start_row"] == run["rows_written"]
            assert db.count(schema, "chunk") == rows
        finally:
            fast.stop()
    finally:
        server.stop()


def test_pull_usage_errors(schema):
    for args in (["pull", "--source", "x"], ["pull", "--target", "h:1"],
                 ["pull", "--target", "h:1", "--source", "x", "--resume",
                  "--from-start"]):
        out = subprocess.run([EMBEDFLOW_BIN, *args, "--database", DATABASE,
                              "--schema", schema], capture_output=True,
                             env=clean_env(), timeout=60)
        assert out.returncode == 2, (args, out.stderr)


def test_uploads_are_in_the_job_history(db, schema, embedflow):
    from helpers import send, stream
    ef = embedflow(dim=DIM)
    result = send(ef.target, stream(300, DIM, 100), source="pushed")
    assert result.written == 300
    (run,) = runs(db, schema, job="pushed")
    assert run["id"] == result.job_id
    assert run["trigger"] == "upload" and run["status"] == "completed"
    assert (run["rows_received"], run["rows_written"]) == (300, 300)
    # pushed rows leave no pull checkpoint behind
    assert db.count(schema, "pull_piece") == 0


def test_pull_within_a_small_budget(db, schema):
    """With max_inflight_bytes smaller than one message's reservation, the
    puller reads one message at a time, each only once the rows of the
    last are settled: every row still arrives (a charge never given back
    would stop it)."""
    rows = 5000
    server = AiServer(rows, DIM, extra=["--delay-ms", "0"])
    try:
        ef = pull(schema, server.target, extra=["--max_inflight_bytes", "1M"])
        assert finish(ef) == 0, ef.log
        assert stored_rows(db, schema) == (rows, rows, 0, rows - 1)
    finally:
        server.stop()


def test_progress_counts_this_run(db, schema):
    # 10 chunks 600 ms apart: a run of about 6 s, past the first progress
    # line (every 5 s when stderr is not a terminal)
    rows = 2560
    server = AiServer(rows, DIM, extra=["--delay-ms", "600"])
    try:
        ef = pull(schema, server.target)
        m = ef.wait_for_line(r"progress: received (\d+) rows, (\d+) settled",
                             timeout=60)
        received, settled = int(m.group(1)), int(m.group(2))
        assert 0 < received < rows and settled <= received, m.group(0)
        assert finish(ef) == 0, ef.log
        assert f"rows received    {rows}" in ef.log
    finally:
        server.stop()
